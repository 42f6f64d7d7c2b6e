"""Fitting the out-of-scope gate (`mltagger.models.gate.TextGate`) with scikit-learn.

The gate learns in-scope (any of the six topics) against out-of-scope from the recipe's train
split (its topic items against its `other` items) and the registry negatives
(data/negatives/registry.json): real texts only. The fitted vectorisers and head are turned into
the plain form the service scores with; `tests/unit/models/test_gate.py` holds the two to the
same probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from mltagger.models.gate import Block, TextGate

# The settings compared in docs/studies/gate_kinds.py (the `tfidf` kind).
WORDS = {"ngram_range": (1, 2), "min_df": 2}
CHARS = {"ngram_range": (3, 5), "min_df": 3}
C = 4.0


def fit_pipeline(texts: Sequence[str], in_scope: Sequence[bool], seed: int = 0):
    """The scikit-learn pipeline: word and char_wb TF-IDF (sublinear, L2) and a logistic head."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    y = np.asarray(in_scope, dtype=int)
    if len(set(y.tolist())) < 2:
        raise ValueError("the gate needs in-scope and out-of-scope texts to learn from")
    words = TfidfVectorizer(analyzer="word", sublinear_tf=True, **WORDS)
    chars = TfidfVectorizer(analyzer="char_wb", sublinear_tf=True, **CHARS)
    head = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    return make_pipeline(make_union(words, chars), head).fit(list(texts), y)


def to_text_gate(pipeline) -> TextGate:
    """The fitted pipeline as the numpy scorer the service runs."""
    union, head = pipeline.steps[0][1], pipeline.steps[-1][1]
    coef = head.coef_[0]
    blocks, weights, start = [], [], 0
    for _, vec in union.transformer_list:
        n = len(vec.vocabulary_)
        blocks.append(
            Block(
                analyzer=vec.analyzer,
                ngram_range=tuple(vec.ngram_range),
                vocabulary={t: int(i) for t, i in vec.vocabulary_.items()},
                idf=np.asarray(vec.idf_, dtype=float),
            )
        )
        weights.append(np.asarray(coef[start : start + n], dtype=float))
        start += n
    return TextGate(blocks=blocks, coef=weights, intercept=float(head.intercept_[0]))


def fit_gate(texts: Sequence[str], in_scope: Sequence[bool], seed: int = 0) -> TextGate:
    """A fitted TextGate for these texts (True: one of the six topics)."""
    return to_text_gate(fit_pipeline(texts, in_scope, seed))


def fit_run_gate(
    train: Sequence[dict], negatives: Sequence[dict], fallback_tag: str, seed: int = 0
) -> TextGate:
    """The gate of a training run: its train split's topic items against its `other` items and
    the negatives (real texts of no topic). Negatives train the gate only, never the encoder."""
    texts = [it["text"] for it in train] + [it["text"] for it in negatives]
    in_scope = [it["tag"] != fallback_tag for it in train] + [False] * len(negatives)
    return fit_gate(texts, in_scope, seed)


def gate_auroc(gate: TextGate, items: Sequence[dict], fallback_tag: str) -> float | None:
    """How well the gate ranks topic items above `other` items of a split (None when the split
    lacks either)."""
    from sklearn.metrics import roc_auc_score

    y = [it["tag"] != fallback_tag for it in items]
    if len(set(y)) < 2:
        return None
    return float(roc_auc_score(y, gate.in_scope(it["text"] for it in items)))


def cross_fitted_in_scope(
    oof: Sequence[dict],
    items: Sequence[dict],
    negatives: Sequence[dict],
    fallback_tag: str,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """The gate's in-scope probability of every out-of-fold row, from a gate that never saw it.

    For each (CV seed, fold) of the rows, a gate is fitted on every item of the CV data (`items`:
    train + val, weak rows included, as a training run's gate sees its train split) outside that
    fold, plus the negatives, and scores the fold's rows. The gate threshold is chosen on these
    scores (`mltagger.evaluation.thresholds.choose_gated_rule`); scores of a gate fitted on the
    rows themselves would make it look better than it is.
    """
    by_id = {it["id"]: it for it in items}
    missing = [r["id"] for r in oof if r["id"] not in by_id]
    if missing:
        raise ValueError(f"out-of-fold rows not in the data: {missing[:5]}")
    keys = sorted({(r["seed"], r["fold"]) for r in oof})
    scores = [float("nan")] * len(oof)
    for s, f in tqdm(keys, desc="gate per fold", disable=not progress):
        rows = [i for i, r in enumerate(oof) if (r["seed"], r["fold"]) == (s, f)]
        held = {oof[i]["id"] for i in rows}
        gate = fit_run_gate(
            [it for it in items if it["id"] not in held], negatives, fallback_tag, seed
        )
        p = gate.in_scope([by_id[oof[i]["id"]]["text"] for i in rows])
        for i, v in zip(rows, p, strict=True):
            scores[i] = float(v)
    return scores
