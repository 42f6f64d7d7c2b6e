"""Which waiting item a person should label next: the review queue's strategies, in numpy.

A label is worth most where the model is unsure, and a day's labels are worth more when they are
not ten copies of one thing. The strategies are the standard ones of active learning for text
classification (least confidence; breaking ties, i.e. the smallest margin between the top two
classes; breaking ties with diversity; a weight toward tags with few labels), each ordering the
queue from scores the service already stores (the probabilities, the duplicate screen's sketch).

Two rules hold under every strategy, because a queue that only ever serves the most uncertain
items starves the rest and biases what reviews can tell:
- an item that has waited `max_age` or longer goes first (oldest first among those);
- a fixed share of positions (`random_share`) is filled with a uniformly random waiting item,
  so some confident items reach people too (reviewers' mistakes and the model's confident errors
  show up there). The audit sample of auto-tagged items stays apart, unbiased.

Pure numpy: the service runs it (serving stays numpy/onnxruntime), and `mltagger simulate-labels`
runs the same code on the stream pool, so the strategy measured is the strategy served.
small-text's query strategies take its own classifier and dataset objects and importing it
imports torch and transformers where installed (docs/review.md says what was tried); these few
lines are written here, with small-text as the tests' oracle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mltagger.core.errors import UserError

STRATEGIES = {
    "oldest": "oldest first (they have waited longest)",
    "least_confident": "the model's least confident answers first",
    "breaking_ties": "the smallest margin between the model's top two tags first",
    "diverse_ties": "breaking ties, each item unlike those picked before it",
    "rare_tags": "breaking ties, weighted toward tags with few labels so far",
}
# Two items whose sketches have cosine at or above this are "the same thing" for diversity,
# which is applied to the first DIVERSE_SPAN picks (the rest follow in breaking-ties order).
SIMILAR = 0.8
DIVERSE_SPAN = 200
# When labels stop paying: the last STOP_LABELS labels moved auto-tag coverage by less than
# STOP_GAIN. The simulation reports it on the replay, the health page on the store's reviews.
STOP_LABELS, STOP_GAIN = 100, 0.01


def check_strategy(name: str) -> str:
    """`name` when it is a strategy; otherwise a one-line error listing the valid ones."""
    if name not in STRATEGIES:
        raise UserError(f"unknown review strategy {name!r}; one of {', '.join(STRATEGIES)}")
    return name


def margin(probs: np.ndarray) -> np.ndarray:
    """Top probability minus the second: small means the model could not pick between two."""
    if probs.shape[1] < 2:
        return np.ones(len(probs))
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def tag_weights(label_counts: Mapping[int, int] | Sequence[int], n_classes: int) -> np.ndarray:
    """Per class, 1/sqrt(1 + labels so far), scaled so the rarest class weighs 1."""
    counts = np.zeros(n_classes)
    items = label_counts.items() if isinstance(label_counts, Mapping) else enumerate(label_counts)
    for c, n in items:
        counts[int(c)] = n
    w = 1.0 / np.sqrt(1.0 + counts)
    return w / w.max()


def uncertainty(
    strategy: str, probs: np.ndarray, label_counts: Mapping[int, int] | None = None
) -> np.ndarray:
    """How much a label is worth per item under `strategy` (higher: ask first); 0 for `oldest`."""
    check_strategy(strategy)
    probs = np.asarray(probs, dtype=float)
    if strategy == "oldest" or len(probs) == 0:
        return np.zeros(len(probs))
    if strategy == "least_confident":
        return 1.0 - probs.max(axis=1)
    score = 1.0 - margin(probs)
    if strategy == "rare_tags":
        score = score * tag_weights(label_counts or {}, probs.shape[1])[probs.argmax(axis=1)]
    return score


def _diverse(candidates: np.ndarray, unit: np.ndarray, span: int, similar: float) -> list[int]:
    """Greedy over the first `span` picks: walk `candidates` (best first) and keep one unless it
    is `similar` to one kept already; the rest follow in their order. `span` is fixed (not the
    page), so every page of a queue is a slice of one order."""
    kept: list[int] = []
    skipped: list[int] = []
    for i in candidates:
        if len(kept) >= span:
            skipped.append(int(i))
            continue
        if kept and float((unit[kept] @ unit[i]).max()) >= similar:
            skipped.append(int(i))
        else:
            kept.append(int(i))
    return kept + skipped


def order(
    strategy: str,
    probs: np.ndarray,
    ages: np.ndarray,
    *,
    max_age: float | None = None,
    random_share: float = 0.0,
    embeddings: np.ndarray | None = None,
    label_counts: Mapping[int, int] | None = None,
    k: int | None = None,
    seed: int = 0,
    similar: float = SIMILAR,
) -> np.ndarray:
    """Indices of the waiting items in the order a person should take them.

    `ages`: how long each has waited (any unit, the same as `max_age`). `k`: how many will be
    taken (a day's budget, a page and those before it): the random share is drawn for the first
    k positions only, and the first k of the order are the same whatever k is (pages agree).
    `embeddings` (one row per item) are needed by `diverse_ties` only. `seed` fixes the random
    picks, so the same queue on the same day is served in the same order.
    """
    check_strategy(strategy)
    if not 0.0 <= random_share < 1.0:
        raise UserError(f"random_share must be in [0, 1), not {random_share}")
    ages = np.asarray(ages, dtype=float)
    n = len(ages)
    if n == 0:
        return np.zeros(0, dtype=int)
    k = n if k is None else max(0, min(k, n))
    score = uncertainty(strategy, probs, label_counts)
    # best score first, ties: the one that waited longer, then the lower index
    ranked = np.lexsort((np.arange(n), -ages, -score))
    overdue = np.zeros(n, dtype=bool) if max_age is None else ages >= max_age
    first = ranked[overdue[ranked]]
    first = first[np.argsort(-ages[first], kind="stable")]
    rest = ranked[~overdue[ranked]]
    if strategy == "diverse_ties" and len(rest):
        if embeddings is None:
            raise UserError("the diverse_ties strategy needs the items' embeddings")
        emb = np.asarray(embeddings, dtype=float)
        unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        rest = np.asarray(_diverse(rest, unit, DIVERSE_SPAN, similar), dtype=int)
    room = max(0, k - len(first))
    rest = _with_random_share(list(rest), room, random_share, seed)
    return np.asarray(list(first) + rest, dtype=int)


def _with_random_share(ranked: list[int], room: int, share: float, seed: int) -> list[int]:
    """`ranked` with each of its first `room` positions taken, with probability `share`, by a
    uniformly random item of those left (seeded). The coin of position p and the p-th pick are
    the same whatever `room` is, so a longer page starts with the shorter one."""
    if share <= 0 or room == 0:
        return ranked
    coins = np.random.default_rng([seed, 1]).random(min(room, len(ranked))) < share
    picks = np.random.default_rng([seed, 2])
    left = list(ranked)
    out: list[int] = []
    for is_random in coins:
        out.append(left.pop(int(picks.random() * len(left))) if is_random else left.pop(0))
    return out + left


def stopping_point(
    windows: Sequence[Mapping[str, float]], labels: int = STOP_LABELS, gain: float = STOP_GAIN
) -> int | None:
    """The labels spent when coverage stopped paying: the first window (in arrival order, each
    with its `coverage` and the `labels` spent by its end) after which the next `labels`
    labels raised coverage by less than `gain`; None while they still pay (or too few labels
    came after any window to say)."""
    for i, w in enumerate(windows):
        later = [v for v in windows[i + 1 :] if v["labels"] - w["labels"] >= labels]
        if later and later[0]["coverage"] - w["coverage"] < gain:
            return int(w["labels"])
    return None
