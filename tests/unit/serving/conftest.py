"""The service's unit tests' shared fixture: a Tagger over the known-answer predictor
(tests/fakes.py) and a real SQLite file."""

from __future__ import annotations

import pytest

from mltagger.serving.service import Tagger
from mltagger.serving.store import Store
from tests.fakes import FakePredictor, make_model_folder, write_screen


@pytest.fixture
def tagger(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    yield Tagger(
        FakePredictor(make_model_folder(tmp_path / "model")),
        store,
        screen_file=write_screen(tmp_path / "screen.json"),
    )
    store.close()
