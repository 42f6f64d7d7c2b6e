"""Noisy weak labels: the confident-learning finder (cleanlab), the layer that applies its
findings, and labels corrected by a person."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from mltagger.core.errors import DataError
from mltagger.data.corrections import apply_layer, ids_digest
from mltagger.data.prepare import apply_reviewed_labels
from mltagger.data.validation import RawRow, validate_rows
from mltagger.training.label_issues import (
    build_layer,
    find_label_issues,
    oof_probs_for,
    render_summary,
)
from tests.conftest import make_items, make_other_items


def clean(rows, tags):
    return validate_rows([RawRow(i, r) for i, r in enumerate(rows, 1)], tags).items


def test_finder_ranks_three_flipped_labels_first(tags):
    rows = make_items() + make_other_items()
    flips = {  # title -> the wrong label it is given
        "Time series forecasting with LSTM": "other",  # a topic item weakly labelled out-of-scope
        "Multi-agent reinforcement learning": "computer-vision",
        "Graph neural networks": "mlops",
    }
    truth = {}
    for r in rows:
        if r["title"] in flips:
            truth[r["id"]] = r["tag"]
            r["tag"] = flips[r["title"]]
    items = [{**it, "source": "tiny"} for it in clean(rows, tags)]
    labels = [t for t in tags if any(it["tag"] == t for it in items)]
    # Seven rows a class is too few to learn every row, so a few honest items are flagged too,
    # and which ones depends on the fold split (seed): the planted errors must rank first.
    issues, summary = find_label_issues(items, labels, folds=3, seed=0)
    assert {r["id"]: r["suggested"] for r in issues[:3]} == truth
    assert all(r["suggested_prob"] > r["given_prob"] for r in issues[:3])
    given = [r["given_prob"] for r in issues]
    assert given == sorted(given)  # self-confidence: least probable given label first
    assert summary["suspects"] == len(issues)
    assert sum(map(sum, summary["confident_joint"]["matrix"])) <= len(items)
    assert set(summary["thresholds"]) == set(labels)


def synthetic(n=40, k=3, seed=0):
    """n rows labelled round-robin over k classes; the model agrees with each label (p .6-.9)."""
    rng = np.random.default_rng(seed)
    labels = [f"c{j}" for j in range(k)]
    y = np.arange(n) % k
    own = rng.uniform(0.6, 0.9, n)
    probs = np.tile(((1 - own) / (k - 1))[:, None], (1, k))
    probs[np.arange(n), y] = own
    items = [
        {"id": i, "tag": labels[y[i]], "title": f"t{i}", "description": "d" * 300} for i in range(n)
    ]
    return items, labels, probs


def test_finder_on_given_probabilities_flags_the_contradicted_rows_first():
    items, labels, probs = synthetic()
    # Rows 3 (labelled c0), 7 (c1) and 11 (c2): the model gives another class most probability.
    probs[3] = [0.04, 0.06, 0.9]
    probs[7] = [0.1, 0.08, 0.82]
    probs[11] = [0.75, 0.1, 0.15]
    probs[0] = [0.98, 0.01, 0.01]  # confidently correct (labelled c0)
    issues, summary = find_label_issues(items, labels, probs=probs)
    assert [(r["id"], r["suggested"]) for r in issues[:3]] == [(3, "c2"), (7, "c2"), (11, "c0")]
    assert issues[0]["given_prob"] == pytest.approx(0.04)
    assert issues[0]["margin"] == pytest.approx(0.86)
    assert len(issues[0]["description"]) == 200
    assert 0 not in {r["id"] for r in issues}
    assert summary["rows"] == 40 and summary["suspects"] == len(issues)
    assert summary["confident_joint"]["labels"] == labels


def test_finder_rejects_probabilities_it_cannot_judge():
    items, labels, probs = synthetic()
    with pytest.raises(ValueError, match="shape"):
        find_label_issues(items, labels, probs=probs[:, :2])
    with pytest.raises(DataError, match=r"none labelled \['c3'\]"):
        find_label_issues(items, [*labels, "c3"], probs=np.hstack([probs, np.zeros((40, 1))]))
    with pytest.raises(DataError, match="cleanlab could not judge"):
        find_label_issues(items, labels, probs=probs * 2)


def write_oof(path, rows, labels=("a", "b"), data_sha256="d1"):
    path.write_text(
        json.dumps(
            {
                "fingerprint": "f1",
                "data_sha256": data_sha256,
                "labels": list(labels),
                "folds": 2,
                "seeds": [0, 1],
                "oof": [
                    {
                        "id": i,
                        "gold": "a",
                        "seed": s,
                        "fold": 0,
                        "scores": dict(zip(labels, p, strict=True)),
                    }
                    for i, s, p in rows
                ],
            }
        )
    )
    return path


def test_oof_probs_are_aligned_averaged_over_seeds_and_renormalised(tmp_path):
    path = write_oof(
        tmp_path / "oof.json",
        [(1, 0, [0.9, 0.1]), (2, 0, [0.2, 0.6]), (1, 1, [0.5, 0.5]), (3, 0, [0.3, 0.7])],
    )
    items = [{"id": 2}, {"id": 1}]
    probs = oof_probs_for(items, ["a", "b"], path)
    assert probs == pytest.approx(np.array([[0.25, 0.75], [0.7, 0.3]]))
    assert oof_probs_for(items, ["a", "b"], path, data_sha256="d1").shape == (2, 2)

    with pytest.raises(DataError, match=r"1 of 3 rows.*`make cv`"):
        oof_probs_for([*items, {"id": 4}], ["a", "b"], path)
    with pytest.raises(DataError, match="has classes"):
        oof_probs_for(items, ["b", "a"], path)
    with pytest.raises(DataError, match="other data"):
        oof_probs_for(items, ["a", "b"], path, data_sha256="d2")
    with pytest.raises(DataError, match="not found"):
        oof_probs_for(items, ["a", "b"], tmp_path / "none.json")


def test_layer_from_encoder_out_of_fold_probabilities_records_its_source(tmp_path):
    items, labels, probs = synthetic()
    probs[3] = [0.04, 0.06, 0.9]
    write_oof(
        tmp_path / "oof.json",
        [(it["id"], 0, p) for it, p in zip(items, probs.tolist(), strict=True)],
        labels=labels,
    )
    data = SimpleNamespace(
        splits={"train": items, "val": [], "test": []},
        label_names=lambda: labels,
        data_sha256="d1",
        split_config={"seed": 0},
    )
    cfg = OmegaConf.create({"oof": "oof.json", "folds": 5, "seed": 0})
    layer = build_layer(data, cfg, root_dir=tmp_path)
    m = layer["method"]
    assert m["name"] == "cleanlab.filter.find_label_issues"
    assert (m["filter_by"], m["ranked_by"]) == ("prune_by_noise_rate", "self_confidence")
    assert m["probs"] == "encoder out-of-fold (make cv): oof.json"
    assert m["probs_fingerprint"] == "f1" and len(m["probs_sha256"]) == 64
    assert layer["issues"][0]["id"] == 3
    assert layer["train_ids_sha256"] == ids_digest(items)
    assert "encoder out-of-fold (make cv): oof.json" in render_summary(layer)


def test_finder_needs_enough_rows_per_class(tags):
    items = clean(make_items(per_tag=2), tags)
    with pytest.raises(DataError, match="at least `folds` rows per class"):
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
    from mltagger.data.validation import combined_sha256

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
