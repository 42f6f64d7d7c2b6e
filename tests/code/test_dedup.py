"""Duplicate screening logic: hashing, the embedding index, batch/store screening, the pair set
and the precision/recall arithmetic, on hand-made vectors."""

from __future__ import annotations

import random

import numpy as np
import pytest

from mltagger.dedup import (
    EXACT,
    KINDS,
    NEAR,
    Duplicate,
    EmbeddingIndex,
    build_eval_pairs,
    choose_threshold,
    content_hash,
    make_duplicate,
    precision_recall,
    screen,
)
from tests.conftest import make_items


def unit(*v: float) -> np.ndarray:
    a = np.array(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_content_hash_folds_case_punctuation_spacing_and_accents():
    a = content_hash("Object Detection with YOLO!", "Real-time, fast.")
    assert a == content_hash("object detection   with yolo", "real time fast")
    assert a == content_hash("OBJECT DETECTION WITH YÓLO", "real-time fast")
    assert a != content_hash("Object detection with YOLO", "Real-time, slow.")


def test_index_grows_and_returns_the_nearest_id():
    index = EmbeddingIndex(dim=3, capacity=1)
    ids, sims = index.nearest(np.stack([unit(1, 0, 0)]))
    assert ids.tolist() == [-1]  # empty index: nothing to match
    index.add([10], np.stack([unit(1, 0, 0)]))
    index.add([20, 30], np.stack([unit(0, 1, 0), unit(0, 0, 1)]))  # grows past capacity
    assert len(index) == 3
    ids, sims = index.nearest(np.stack([unit(0.1, 1, 0), unit(0, 0, 1)]))
    assert ids.tolist() == [20, 30]
    assert sims[1] == pytest.approx(1.0)
    assert sims[0] == pytest.approx(float(unit(0.1, 1, 0) @ unit(0, 1, 0)))


def test_screen_store_before_batch_exact_before_near():
    index = EmbeddingIndex(dim=3)
    index.add([7], np.stack([unit(1, 0, 0)]))
    hashes = ["h-stored", "h-new", "h-new", "h-other", "h-far"]
    emb = np.stack(
        [unit(0, 0, 1), unit(0, 1, 0), unit(0, 1, 0), unit(0.05, 1, 0), unit(1, 0.05, 0)]
    )
    out = screen(hashes, emb, lambda hs: {"h-stored": 3} if "h-stored" in hs else {}, index, 0.99)
    assert out[0].kind == EXACT and out[0].item_id == 3
    assert out[1] is None
    assert out[2].kind == EXACT and out[2].batch_index == 1
    assert out[3].kind == NEAR and out[3].batch_index == 1 and out[3].similarity >= 0.99
    assert out[4].kind == NEAR and out[4].item_id == 7
    # A higher threshold turns the near calls off, never the exact ones.
    strict = screen(hashes, emb, lambda hs: {"h-stored": 3}, index, 0.99999)
    assert [d.kind if d else None for d in strict] == [EXACT, None, EXACT, None, None]


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_copy_changes_the_text_but_keeps_it_recognisable(kind):
    item = {
        "title": "Image classification using a simple model",
        "description": "A tutorial on how to train a network on a large image dataset, with "
        "code and a paper explaining the approach step by step.",
    }
    copy = make_duplicate(item, kind, random.Random(1))
    assert copy != item
    same_hash = content_hash(**copy) == content_hash(**item)
    assert same_hash == (kind == "format")  # only the format-only copy is an exact duplicate
    with pytest.raises(ValueError, match="unknown duplicate kind"):
        make_duplicate(item, "shuffled", random.Random(0))


def test_eval_pairs_have_one_copy_per_item_and_distinct_pairs_of_different_items():
    items = [{**it, "text": f"{it['title']}. {it['description']}"} for it in make_items()]
    pairs = build_eval_pairs(items, seed=0)
    dups = [p for p in pairs if p["duplicate"]]
    assert len(dups) == len(items)
    assert {p["kind"] for p in dups} == set(KINDS)
    distinct = [p for p in pairs if not p["duplicate"]]
    assert {p["kind"] for p in distinct} == {"random", "hard_negative"}
    assert all(p["a"] != p["b"] for p in distinct)
    assert build_eval_pairs(items, seed=0) == pairs  # seeded


def test_precision_recall_and_threshold_choice_by_hand():
    scores = np.array([0.99, 0.95, 0.90, 0.85, 0.80, 0.40])
    truth = np.array([True, True, False, True, False, False])
    r = precision_recall(scores, truth, 0.85)
    assert (r["tp"], r["fp"], r["fn"]) == (3, 1, 0)
    assert r["precision"] == pytest.approx(0.75) and r["recall"] == 1.0
    # Precision 1.0 first holds at 0.95 (0.90 is a distinct pair).
    assert choose_threshold(scores, truth, 1.0) == pytest.approx(0.95)
    assert choose_threshold(scores, truth, 0.75) == pytest.approx(0.85)


def test_precision_recall_full_record_and_empty_cases():
    scores = np.array([0.9, 0.8, 0.4, 0.95])
    truth = np.array([True, False, True, True])
    assert precision_recall(scores, truth, 0.85) == {
        "threshold": 0.85,
        "precision": 1.0,
        "recall": 2 / 3,
        "tp": 2,
        "fp": 0,
        "fn": 1,
    }
    at = precision_recall(scores, truth, 0.5)
    assert (at["precision"], at["recall"], at["fp"]) == (2 / 3, 2 / 3, 1)
    # Nothing called a duplicate: precision is 1 by convention; no true duplicates: recall is 1.
    none_called = precision_recall(scores, truth, 0.99)
    assert (none_called["precision"], none_called["recall"]) == (1.0, 0.0)
    no_dups = precision_recall(scores, np.zeros(4, dtype=bool), 0.5)
    assert (no_dups["precision"], no_dups["recall"]) == (0.0, 1.0)
    assert precision_recall(scores, np.zeros(4, dtype=bool), 0.99)["precision"] == 1.0


def test_screen_threshold_falls_back_to_one_and_rounds_to_four_decimals():
    truth = np.array([True, False])
    # No threshold separates a negative scored above the only positive: exact matches only.
    assert choose_threshold(np.array([0.5, 0.9]), truth, 0.97) == 1.0
    # Candidates are rounded to 4 decimals: 0.81234 -> 0.8123.
    assert choose_threshold(np.array([0.81234, 0.3]), truth, 0.97) == 0.8123


def test_screen_similarities_thresholds_and_order_of_checks():
    index = EmbeddingIndex(dim=3)
    index.add([0, 5], np.stack([unit(1, 0, 0), unit(0, 0, 1)]))  # id 0 is an id like any other
    near = unit(1, 0.2, 0)
    cos = float(near @ unit(1, 0, 0))
    hashes = ["stored", "same", "same", "n1", "n2", "n3"]
    emb = np.stack(
        [unit(0, 1, 1), unit(0, 1, 0), unit(0, 1, 0), near, unit(-1, 1, 0), unit(-1, 1.3, 0)]
    )
    out = screen(hashes, emb, lambda hs: {"stored": 9}, index, cos)  # threshold exactly cos
    assert out[0] == Duplicate(EXACT, 1.0, item_id=9)
    assert out[1] is None and out[2] == Duplicate(EXACT, 1.0, batch_index=1)
    # At exactly the threshold it is a duplicate; similarity rounded to 4 decimals.
    assert out[3] == Duplicate(NEAR, round(cos, 4), item_id=0)
    within = float(emb[5] @ emb[4])
    assert out[4] is None  # after a stored match, later items are still screened
    expected = Duplicate(NEAR, round(within, 4), batch_index=4) if within >= cos else None
    assert out[5] == expected and expected is not None
    assert round(within, 4) != round(within)  # 4 decimals, not a whole number
    # Embeddings without an index (screening off): exact matches only.
    assert [d and d.kind for d in screen(hashes, emb, lambda hs: {}, None, 0.5)] == [
        None,
        None,
        EXACT,
        None,
        None,
        None,
    ]


def test_index_keeps_every_vector_as_it_grows_one_at_a_time():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = EmbeddingIndex(dim=8, capacity=1)
    for k, v in enumerate(vectors):
        index.add([100 + k], v[None, :])
    ids, sims = index.nearest(vectors)
    assert ids.tolist() == list(range(100, 140))
    np.testing.assert_allclose(sims, 1.0, atol=1e-5)
    assert sims.dtype == np.float64 and ids.dtype == np.int64
    empty_ids, empty_sims = EmbeddingIndex(dim=8).nearest(vectors[:2])
    assert empty_ids.tolist() == [-1, -1] and empty_sims.tolist() == [-1.0, -1.0]


def test_two_item_batch_near_copy_at_exactly_the_threshold():
    emb = np.stack([unit(1, 0.3, 0), unit(1, 0.31, 0)]).astype(np.float32)
    within = float((emb @ emb.T)[1, 0])
    index = EmbeddingIndex(dim=3)
    out = screen(["a", "b"], emb, lambda hs: {}, index, within)
    assert out == [None, Duplicate(NEAR, round(within, 4), batch_index=0)]
    assert screen(["a", "b"], emb, lambda hs: {}, index, within + 1e-6) == [None, None]


def test_recall_when_half_of_the_duplicates_are_found():
    at = precision_recall(np.array([0.9, 0.1]), np.array([True, True]), 0.5)
    assert (at["tp"], at["fn"], at["recall"]) == (1, 1, 0.5)
