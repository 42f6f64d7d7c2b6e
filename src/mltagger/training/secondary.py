"""Fitting the secondary-tag head (`mltagger.models.secondary.SecondaryHead`) and choosing its
threshold on cross-validation, then scoring the fresh set once (issue 35).

What it learns from: the stream pool (data/pool/stream.json), the only source whose items were
each read for a second defensible tag (`also`, 704 of 1,775; a second reader agrees on it with
kappa 0.755, data/SOURCE.md). Its features are the primary model's probabilities for the item,
taken from the recipe's out-of-fold file (`data.cv_oof`: a fold model that never saw the item,
like the serving model on a new item), and a word TF-IDF of its text.

How the threshold is chosen: the pool's own folds (the out-of-fold file's date-ordered folds);
the head is fitted on two folds and scores the third; the primary rule of the model folder is
applied to the out-of-fold probabilities (its per-tag thresholds and gate), so candidates are
exactly those the service would consider; the lowest threshold whose candidates reach the
precision target with enough support wins. No fresh-set figure takes part; the fresh set is
scored after the choice, with the model folder's own probabilities.

The command (`mltagger secondary`, with the fresh-set figures) is `mltagger.training.secondary_job`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mltagger.data.text import item_text
from mltagger.data.validation import sha256_file
from mltagger.evaluation.secondary import (
    choose_threshold,
    precision_curve,
)
from mltagger.models.gate import Block
from mltagger.models.modelio import InferenceConfig, read_model_metadata
from mltagger.models.rule import apply_threshold, gate_mask
from mltagger.models.secondary import KINDS, SecondaryHead

WORDS = {"ngram_range": (1, 2), "min_df": 2}
C = 1.0
GRID = [round(0.01 * k, 2) for k in range(1, 100)]  # 0.01 .. 0.99


@dataclass
class PoolRows:
    """The pool items with their out-of-fold primary probabilities, in one order."""

    items: list[dict]
    texts: list[str]
    probs: np.ndarray  # (items, tags)
    in_scope: np.ndarray | None
    folds: np.ndarray
    labels: list[str]
    oof_sha256: str


def pool_rows(pool_path: Path, oof_path: Path) -> PoolRows:
    """Join the pool's items (with `also`) to their out-of-fold rows by id."""
    pool = {int(it["id"]): it for it in json.loads(pool_path.read_text())}
    oof = json.loads(oof_path.read_text())
    labels = list(oof["labels"])
    rows = [r for r in oof["oof"] if r.get("source") == "pool" and int(r["id"]) in pool]
    if not rows:
        raise ValueError(f"{oof_path} has no out-of-fold rows of the pool ({pool_path})")
    items = [pool[int(r["id"])] for r in rows]
    has_gate = all("in_scope" in r for r in rows)
    return PoolRows(
        items=items,
        texts=[item_text(it["title"], it.get("description")) for it in items],
        probs=np.array([[r["scores"][t] for t in labels] for r in rows], dtype=float),
        in_scope=np.array([r["in_scope"] for r in rows], dtype=float) if has_gate else None,
        folds=np.array([int(r["fold"]) for r in rows]),
        labels=labels,
        oof_sha256=sha256_file(oof_path),
    )


def membership(items: Sequence[dict], labels: Sequence[str]) -> np.ndarray:
    """(items, tags) 0/1: the tag is the item's gold tag or its gold `also`."""
    y = np.zeros((len(items), len(labels)), dtype=int)
    col = {t: j for j, t in enumerate(labels)}
    for i, it in enumerate(items):
        y[i, col[it["tag"]]] = 1
        if it.get("also"):
            y[i, col[it["also"]]] = 1
    return y


def fit_head(
    texts: Sequence[str],
    probs: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    fallback_tag: str = "other",
    seed: int = 0,
) -> SecondaryHead:
    """The `tfidf+probs` kind: one logistic head per tag on [primary probabilities, word TF-IDF],
    as a numpy scorer (no thresholds yet)."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(analyzer="word", sublinear_tf=True, **WORDS)
    words = vec.fit_transform(list(texts))
    x = hstack([csr_matrix(np.asarray(probs, dtype=float)), words]).tocsr()
    n_tags = len(labels)
    coef = np.zeros((n_tags + words.shape[1], n_tags))
    intercept = np.zeros(n_tags)
    for j in range(n_tags):
        if len(set(y[:, j].tolist())) < 2:  # a tag never (or always) present: a constant
            intercept[j] = 20.0 if y[0, j] else -20.0
            continue
        head = LogisticRegression(C=C, max_iter=3000, random_state=seed).fit(x, y[:, j])
        coef[:, j], intercept[j] = head.coef_[0], head.intercept_[0]
    block = Block(
        analyzer="word",
        ngram_range=tuple(vec.ngram_range),
        vocabulary={t: int(i) for t, i in vec.vocabulary_.items()},
        idf=np.asarray(vec.idf_, dtype=float),
    )
    return SecondaryHead(
        labels=list(labels),
        apply_threshold=None,
        kind="tfidf+probs",
        block=block,
        coef_words=coef[n_tags:],
        coef_probs=coef[:n_tags],
        intercept=intercept,
        fallback_tag=fallback_tag,
    )


def make_head(
    kind: str,
    texts: Sequence[str],
    probs: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    fallback_tag: str,
) -> SecondaryHead:
    """A head of this kind fitted on these rows (`second-score` has nothing to fit)."""
    if kind == "second-score":
        return SecondaryHead(labels=list(labels), apply_threshold=None, fallback_tag=fallback_tag)
    return fit_head(texts, probs, y, labels, fallback_tag)


def primary_decisions(
    probs: np.ndarray, in_scope: np.ndarray | None, labels: Sequence[str], inf: InferenceConfig
) -> tuple[list[str], np.ndarray]:
    """The model folder's primary rule on these probabilities: (tags, needs_review)."""
    gated = None
    if inf.gate_threshold is not None and in_scope is not None:
        gated = gate_mask(in_scope, inf.gate_threshold, len(probs))
    tags, _, review = apply_threshold(
        probs, labels, inf.decision_threshold(), inf.fallback_tag, gated
    )
    return tags, review


def candidates(
    head: SecondaryHead, items: Sequence[dict], primary: Sequence[str | None], scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(score, right) of every candidate beside each item's primary tag (None: skip the item),
    at threshold 0; right = the gold tag or the gold `also`."""
    out_s, out_r = [], []
    for item, tag, row in zip(items, primary, scores, strict=True):
        if tag is None:
            continue
        ok = {item["tag"], item.get("also") or None}
        for cand, s in head.candidates(tag, row, 0.0):
            out_s.append(s)
            out_r.append(cand in ok)
    return np.array(out_s, dtype=float), np.array(out_r, dtype=bool)


def average_precision(scores: np.ndarray, right: np.ndarray) -> float | None:
    """Ranking quality of candidates (mean precision at each right one), None without any."""
    if not right.any():
        return None
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(right[order])
    return round(float((hits / np.arange(1, len(order) + 1))[right[order]].mean()), 4)


def oof_scores(rows: PoolRows, kind: str, fallback_tag: str) -> np.ndarray:
    """(items, tags) scores of each pool item by a head fitted without its fold."""
    y = membership(rows.items, rows.labels)
    out = np.zeros_like(rows.probs)
    for fold in np.unique(rows.folds):
        tr, te = np.where(rows.folds != fold)[0], np.where(rows.folds == fold)[0]
        head = make_head(
            kind, [rows.texts[i] for i in tr], rows.probs[tr], y[tr], rows.labels, fallback_tag
        )
        out[te] = head.scores([rows.texts[i] for i in te], rows.probs[te])
    return out


def cross_validate(
    rows: PoolRows,
    inf: InferenceConfig,
    apply_target: float,
    suggest_target: float,
    min_applied: int,
) -> dict:
    """Each kind's out-of-fold candidates on the pool's folds: beside applied primary tags (the
    apply threshold's evidence) and beside every item's top tag (the suggest threshold's), their
    precision curves and average precision; the kind with the better applied AP, its thresholds."""
    tags, review = primary_decisions(rows.probs, rows.in_scope, rows.labels, inf)
    applied = [None if r else t for t, r in zip(tags, review, strict=True)]
    top = [rows.labels[k] for k in rows.probs.argmax(axis=1)]
    per_kind = {}
    for kind in KINDS:
        scores = oof_scores(rows, kind, inf.fallback_tag)
        head = SecondaryHead(
            labels=rows.labels, apply_threshold=None, fallback_tag=inf.fallback_tag
        )
        a_s, a_r = candidates(head, rows.items, applied, scores)
        s_s, s_r = candidates(head, rows.items, top, scores)
        apply_curve = precision_curve(a_s, a_r, GRID)
        suggest_curve = precision_curve(s_s, s_r, GRID)
        per_kind[kind] = {
            "apply_ap": average_precision(a_s, a_r),
            "suggest_ap": average_precision(s_s, s_r),
            "apply_candidates": len(a_s),
            "suggest_candidates": len(s_s),
            "apply": choose_threshold(apply_curve, apply_target, min_applied),
            "suggest": choose_threshold(suggest_curve, suggest_target, min_applied),
            "apply_curve": apply_curve,
            "suggest_curve": suggest_curve,
        }
    kind = max(KINDS, key=lambda k: per_kind[k]["apply_ap"] or 0.0)
    return {
        "kinds": per_kind,
        "kind": kind,
        "apply": per_kind[kind]["apply"],
        "suggest": per_kind[kind]["suggest"],
        "apply_target": apply_target,
        "suggest_target": suggest_target,
        "min_applied": min_applied,
        "pool_items": len(rows.items),
        "pool_also": sum(1 for it in rows.items if it.get("also")),
        "folds": len(np.unique(rows.folds)),
    }


def ship(
    model_dir: Path,
    pool: Path,
    oof: Path,
    out: Path,
    *,
    target: float = 0.85,
    suggest_target: float = 0.5,
    min_applied: int = 20,
    write: Sequence[Path] = (),
) -> tuple[SecondaryHead, dict]:
    """Choose on the pool's folds, fit on the whole pool, save secondary.json in `write` (the
    model folder when empty) and in `out`; returns the head and the CV figures."""
    labels, inf = read_model_metadata(model_dir)
    rows = pool_rows(pool, oof)
    if rows.labels != labels:
        raise ValueError(f"{oof} has classes {rows.labels}, the model {labels}")
    cv = cross_validate(rows, inf, target, suggest_target, min_applied)
    head = make_head(
        cv["kind"], rows.texts, rows.probs, membership(rows.items, labels), labels, inf.fallback_tag
    )
    head.apply_threshold = cv["apply"]["threshold"] if cv["apply"] else None
    head.suggest_threshold = cv["suggest"]["threshold"] if cv["suggest"] else None
    head.provenance = {
        "pool_sha256": sha256_file(pool),
        "oof_sha256": rows.oof_sha256,
        "apply": cv["apply"],
        "suggest": cv["suggest"],
        "run": str(out),
        "apply_target": target,
        "suggest_target": suggest_target,
    }
    out.mkdir(parents=True, exist_ok=True)
    for folder in [*write] or [model_dir]:
        head.save(folder)
    head.save(out)
    return head, cv
