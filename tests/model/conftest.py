"""The model under test: --model-dir or MLTAGGER_MODEL_DIR; without one these tests skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_dir(request) -> Path:
    given = request.config.getoption("--model-dir") or os.environ.get("MLTAGGER_MODEL_DIR")
    if not given:
        pytest.skip(
            "behavioural tests need a trained model: make test-model, or pytest tests/model "
            "--model-dir <model folder>"
        )
    folder = Path(given)
    if not (folder / "labels.json").is_file():
        pytest.fail(f"--model-dir {folder}: not a model folder (no labels.json)")
    return folder


@pytest.fixture(scope="session")
def suite(model_dir):
    """Every behavioural family run once on the model (torch or ONNX folder)."""
    from mltagger.evaluation.behavior import run_suite
    from mltagger.models.predict import Predictor

    return run_suite(Predictor(model_dir))
