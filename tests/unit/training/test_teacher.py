"""Shipped teacher soft labels: they apply only to the data they were computed on, and a
cross-fitted teacher never scores an item it was fitted on."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from mltagger.core.errors import DataError
from mltagger.training.teacher import cross_fitted_probs, load_soft_labels, soft_labels_file

LABELS = ["a", "b"]


def _data(sha="d1"):
    return SimpleNamespace(data_sha256=sha)


def _items(n=4):
    return [{"id": i, "tag": LABELS[i % 2]} for i in range(n)]


def _write(tmp_path, items, sha="d1", labels=LABELS):
    probs = np.array([[0.8, 0.2] if it["tag"] == "a" else [0.3, 0.7] for it in items])
    blob = soft_labels_file(items, probs, labels, _data(sha), {"name": "t"})
    path = tmp_path / "soft.json"
    path.write_text(json.dumps(blob))
    return path


def test_soft_labels_align_with_the_training_items(tmp_path):
    items = _items()
    path = _write(tmp_path, items)
    probs, info = load_soft_labels(path, _data(), LABELS, list(reversed(items)))
    assert info["used"] is True and info["rows"] == 4
    assert probs.tolist() == [[0.3, 0.7], [0.8, 0.2], [0.3, 0.7], [0.8, 0.2]]


def test_other_data_or_classes_turn_them_off_with_the_reason(tmp_path):
    path = _write(tmp_path, _items())
    probs, info = load_soft_labels(path, _data("other-sha"), LABELS, _items())
    assert probs is None and info["used"] is False and "computed for data d1" in info["reason"]
    probs, info = load_soft_labels(path, _data(), ["a", "c"], _items())
    assert probs is None and "other classes" in info["reason"]


def test_a_training_item_without_a_soft_label_is_an_error(tmp_path):
    path = _write(tmp_path, _items(3))
    with pytest.raises(DataError, match="no soft label for 1 training items"):
        load_soft_labels(path, _data(), LABELS, _items(4))
    with pytest.raises(DataError, match="make teacher"):
        load_soft_labels(tmp_path / "missing.json", _data(), LABELS, _items())


def test_cross_fitted_probs_come_from_models_that_never_saw_the_row():
    # Every row is a duplicate pair, except row 0, whose label disagrees with its features:
    # a model that saw row 0 would give it some probability of "b"; fitted without it, none.
    x = np.array([[1.0, 0.0]] * 10 + [[0.0, 1.0]] * 10)
    y = np.array([0] * 10 + [1] * 10)
    y[0] = 1
    p = cross_fitted_probs(x, y, 2, folds=5, seed=0)
    assert p.shape == (20, 2) and np.allclose(p.sum(1), 1)
    assert p[0, 1] < 0.2  # judged by regressions fitted on the other rows: looks like class 0
    assert (p[1:10, 0] > 0.5).all() and (p[10:, 1] > 0.5).all()


def test_make_teacher_with_an_unknown_data_config_says_so_in_one_line(capsys, monkeypatch):
    from mltagger.training.teacher import main
    from tests.conftest import REPO

    monkeypatch.setenv("MLTAGGER_ROOT", str(REPO))
    assert main(["--data", "nosuch"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "--data nosuch: no such data config" in out[0]
