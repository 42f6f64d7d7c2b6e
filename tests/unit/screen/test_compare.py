"""The embedding comparison (`mltagger dedup-eval --compare-embeddings`) on a hand-made benchmark
with a hand-made embedding: the threshold comes from split `a`'s new items, split `b` is reported
at it, and the embeddings are cached so a rerun does not embed again."""

from __future__ import annotations

import json
import re

import numpy as np

from mltagger.screen.bench_data import Bench
from mltagger.screen.compare import compare_embeddings, figures_at


def _item(title: str, **extra) -> dict:
    return {"title": title, "description": "", **extra}


def _bench() -> Bench:
    stored = [_item(f"stored {k}") for k in range(4)]
    queries = [_item(f"new {k}", source="fresh", ref=str(k), split="ab"[k % 2]) for k in range(8)]
    copies = [_item(f"stored {k}", of=k, kind="typos", split="ab"[k % 2]) for k in range(4)]
    return Bench({"ml": stored}, queries, copies)


def _embed_by_title(texts: list[str]) -> np.ndarray:
    """Stored items and their copies on one axis each; new items on an axis of their own."""
    out = np.zeros((len(texts), 6), np.float32)
    for row, text in enumerate(texts):
        word, k = re.search(r"(stored|new) (\d+)", text).groups()
        out[row, 5 if word == "new" else int(k)] = 1.0
    return out


def test_threshold_is_chosen_on_a_and_copies_are_found_on_b():
    S = np.eye(4, 6, dtype=np.float32)
    Q = np.zeros((4, 6), np.float32)
    Q[:, 5] = 1.0
    Q[0, :] = S[0]  # one new item of split a looks exactly like a stored one
    C = S.copy()
    figures = figures_at(
        4,
        (S, Q, C),
        np.array(["a", "a", "b", "b"]),
        np.array(["a", "b", "b", "b"]),
        np.array(["typos"] * 4),
    )
    # half of a's new items reach 1.0, which 0.5% cannot allow: the threshold passes it
    assert figures["threshold"] > 1.0
    assert figures["false_duplicate_rate_b"] == 0.0
    assert figures["recall_b_by_kind"] == {"typos": 0.0}


def test_compare_writes_each_embedding_and_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr("mltagger.screen.compare.load_adjudicated", lambda root=None: {})
    calls = []

    def embed(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return _embed_by_title(texts)

    rows = compare_embeddings({"by title": embed}, _bench(), "ml", tmp_path, sizes=(4,))
    (row,) = rows
    assert row["4"]["false_duplicate_rate_b"] == 0.0
    assert row["4"]["recall_b_by_kind"] == {"typos": 1.0}
    assert json.loads((tmp_path / "compare_ml.json").read_text()) == rows
    embedded = sum(calls)
    compare_embeddings({"by title": embed}, _bench(), "ml", tmp_path, sizes=(4,))
    # the second run embeds only the cost probe (a warm-up text, then the 8 queries one by one
    # and three times as one batch), not the store, the queries and the copies again
    assert sum(calls) - embedded == 1 + 8 + 3 * 8
