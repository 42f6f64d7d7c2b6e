"""The predictor's decision rule on known logits: temperature, threshold, fallback, reasons."""

from __future__ import annotations

import numpy as np
import pytest

from tests.fakes import LABELS, TEMPERATURE, THRESHOLD, FakePredictor, make_model_folder


@pytest.fixture
def predictor(tmp_path):
    return FakePredictor(make_model_folder(tmp_path / "model"))


def test_probabilities_are_softmax_of_logits_over_the_temperature(predictor):
    assert predictor.inference.temperature == TEMPERATURE != 1.0
    logits = np.array([[3.0, 1.0, 0.0, 0.0, -2.0, 0.5, 1.5]])
    z = logits / TEMPERATURE
    expected = np.exp(z) / np.exp(z).sum()
    np.testing.assert_allclose(predictor.probabilities(logits), expected, rtol=1e-12)


def test_confident_items_are_auto_tagged_and_unsure_ones_go_to_review(predictor):
    items = [
        {"id": 1, "text": "Image segmentation"},  # one keyword: sure
        {"id": 2, "text": "Nothing to go on"},  # no keyword: uniform scores
        {"id": 3, "text": "Graph forecast"},  # two keywords: split between two tags
    ]
    sure, blank, split = predictor.predict(items)
    assert sure["tag"] == "computer-vision" and sure["needs_review"] is False
    assert sure["reason"] == "classifier" and sure["confidence"] > THRESHOLD
    for p in (blank, split):
        assert p["tag"] == "other" and p["needs_review"] is True
        assert p["reason"] == "low_confidence" and p["confidence"] < THRESHOLD
    assert blank["confidence"] == pytest.approx(1 / len(LABELS), abs=1e-6)
    assert split["scores"]["graph-learning"] == pytest.approx(split["scores"]["time-series"])
    assert [p["id"] for p in (sure, blank, split)] == [1, 2, 3]
    assert sure["model_version"] == "fake-1"
