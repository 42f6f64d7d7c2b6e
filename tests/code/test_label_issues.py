"""Noisy weak labels: the confident-learning finder, the layer that applies its findings, and
labels corrected by a person."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mltagger.data import DataError, RawRow, apply_reviewed_labels, validate_rows
from mltagger.label_issues import apply_layer, confident_learning, find_label_issues, ids_digest
from tests.conftest import make_items, make_other_items


def clean(rows, tags):
    return validate_rows([RawRow(i, r) for i, r in enumerate(rows, 1)], tags).items


def test_confident_learning_by_hand():
    # Class thresholds: mean p(a) over rows labelled a = (.9 + .8 + .2) / 3 = .633;
    # mean p(b) over rows labelled b = (.7 + .6) / 2 = .65.
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8], [0.3, 0.7], [0.4, 0.6]])
    labels = np.array([0, 0, 0, 1, 1])
    cl = confident_learning(probs, labels)
    assert cl["thresholds"] == pytest.approx([1.9 / 3, 0.65])
    # Row 2 (labelled a) confidently b; row 4 (p_b .6 < .65) is confidently nothing.
    assert cl["confident_class"].tolist() == [0, 0, 1, 1, -1]
    assert cl["joint"].tolist() == [[2, 1], [0, 1]]


def test_finder_flags_a_flipped_label(tags):
    rows = make_items() + make_other_items()
    flipped = next(r for r in rows if r["title"] == "Time series forecasting with LSTM")
    flipped["tag"] = "other"  # a topic item weakly labelled out-of-scope
    items = [{**it, "source": "tiny"} for it in clean(rows, tags)]
    labels = [t for t in tags if any(it["tag"] == t for it in items)]
    issues, summary = find_label_issues(items, labels, folds=3, seed=0)
    # Seven rows a class is too few to learn every row, so a few honest items are flagged too;
    # the planted error must rank first (the list is sorted by margin).
    top = issues[0]
    assert (top["id"], top["tag"], top["suggested"]) == (flipped["id"], "other", "time-series")
    assert top["suggested_prob"] > top["given_prob"]
    assert summary["suspects"] == len(issues)
    assert sum(map(sum, summary["confident_joint"]["matrix"])) <= len(items)


def test_finder_needs_enough_rows_per_class(tags):
    items = clean(make_items(per_tag=2), tags)
    with pytest.raises(ValueError, match="at least `folds` rows per class"):
        find_label_issues(items, tags[:6], folds=5)


SPLITS = {
    "train": [
        {"id": 1, "tag": "other"},
        {"id": 2, "tag": "mlops"},
        {"id": 3, "tag": "other"},
    ],
    "val": [{"id": 4, "tag": "other"}],
    "test": [],
}


LAYER = {
    "version": 1,
    "data_sha256": "abc",
    "split": {"val_size": 0.2, "test_size": 0.2, "seed": 0},
    "train_ids_sha256": ids_digest(SPLITS["train"]),
    "issues": [
        {"id": 1, "source": "other", "tag": "other", "suggested": "mlops"},
        {"id": 2, "source": "projects", "tag": "mlops", "suggested": "other"},
    ],
}


def apply(action, layer=LAYER, **kw):
    args = {
        "action": action,
        "sources": ["other"],
        "weight": 0.25,
        "data_sha256": "abc",
        "split_config": {"val_size": 0.2, "test_size": 0.2, "seed": 0},
        **kw,
    }
    return apply_layer(SPLITS, layer, **args)


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("keep", [(1, "other", None), (2, "mlops", None), (3, "other", None)]),
        ("drop", [(2, "mlops", None), (3, "other", None)]),
        ("relabel", [(1, "mlops", None), (2, "mlops", None), (3, "other", None)]),
        ("downweight", [(1, "other", 0.25), (2, "mlops", None), (3, "other", None)]),
    ],
)
def test_layer_actions_touch_only_weak_sources_in_train(action, expected):
    splits, summary = apply(action)
    assert [(it["id"], it["tag"], it.get("weight")) for it in splits["train"]] == expected
    assert splits["val"] == SPLITS["val"]  # evaluation rows are never changed
    assert summary["suspects_in_sources"] == 1


def test_layer_for_other_data_or_split_is_refused():
    with pytest.raises(DataError, match="make label-issues"):
        apply("drop", data_sha256="changed")
    with pytest.raises(DataError, match="make label-issues"):
        apply("drop", split_config={"val_size": 0.1, "test_size": 0.2, "seed": 0})
    with pytest.raises(DataError, match="action must be one of"):
        apply("fix")
    moved = {**LAYER, "train_ids_sha256": ids_digest(SPLITS["train"][:2])}
    with pytest.raises(DataError, match="another split"):
        apply("drop", layer=moved)
    stale = {**LAYER, "issues": [{"id": 4, "source": "other", "tag": "other", "suggested": "a"}]}
    with pytest.raises(DataError, match="outside the train split"):
        apply("drop", layer=stale)


def test_reviewed_labels_apply_to_every_split_and_check_the_shipped_tag(tmp_path, tags):
    path = tmp_path / "reviewed.json"
    path.write_text(
        json.dumps({"corrections": [{"id": 4, "tag": "other", "corrected": "mlops", "note": "x"}]})
    )
    splits, info = apply_reviewed_labels(SPLITS, path, tags)
    assert splits["val"] == [{"id": 4, "tag": "mlops", "tag_shipped": "other"}]
    assert splits["train"] == SPLITS["train"]
    assert info["corrected"] == 1 and info["by_split"]["val"] == 1

    path.write_text(
        json.dumps({"corrections": [{"id": 4, "tag": "mlops", "corrected": "other", "note": ""}]})
    )
    with pytest.raises(DataError, match="expects tag 'mlops'"):
        apply_reviewed_labels(SPLITS, path, tags)
    path.write_text(json.dumps({"corrections": [{"id": 99, "tag": "o", "corrected": "o"}]}))
    with pytest.raises(DataError, match="ids not in the data"):
        apply_reviewed_labels(SPLITS, path, tags)


def test_a_layer_stays_valid_when_a_source_is_appended_and_only_then():
    """`mltagger dataset build` appends a source: the layer built on the earlier sources still
    applies (their rows did not move); a changed earlier source or a moved row is refused."""
    from mltagger.data import combined_sha256

    base = [{"name": "projects", "sha256": "p1"}, {"name": "other", "sha256": "o1"}]
    train = [
        {"id": 1, "tag": "other", "source": "other"},
        {"id": 2, "tag": "mlops", "source": "projects"},
    ]
    layer = {
        **LAYER,
        "data_sha256": combined_sha256(base),
        "train_ids_sha256": ids_digest(train),
        "issues": [{"id": 1, "source": "other", "tag": "other", "suggested": "mlops"}],
    }
    grown = {
        "train": [*train, {"id": 10_000_001, "tag": "time-series", "source": "feedback"}],
        "val": [],
        "test": [],
    }
    args = {
        "action": "relabel",
        "sources": ["other"],
        "weight": 1.0,
        "split_config": LAYER["split"],
    }
    feedback = {"name": "feedback", "sha256": "f1"}
    splits, _ = apply_layer(grown, layer, data_sources=[*base, feedback], **args)
    assert [(it["id"], it["tag"]) for it in splits["train"]] == [
        (1, "mlops"),
        (2, "mlops"),
        (10_000_001, "time-series"),
    ]
    changed = [{"name": "projects", "sha256": "p2"}, base[1], feedback]
    with pytest.raises(DataError, match="computed for other data"):
        apply_layer(grown, layer, data_sources=changed, **args)
    moved = {**grown, "train": grown["train"][1:]}
    with pytest.raises(DataError, match="computed for other data"):
        apply_layer(moved, layer, data_sources=[*base, feedback], **args)
