"""Champion (A) against challenger (B) on the same items.

When both models answer the same items, comparing their two scores as if they came from two
independent samples throws away most of the information: the items both get right, and those
both get wrong, say nothing about which model is better, and their noise cancels. Everything
here is paired, so a small real difference is visible on a few hundred items:

- `mcnemar`: exact test of "A and B are equally often right", from the discordant items alone.
- `paired_bootstrap`: coverage and precision of each model, and percentile intervals of B − A,
  where each resample draws the same items for both models.
- `noninferiority`: is B no worse than A by more than a margin, when the two proportions come
  from different items (Newcombe's hybrid score interval).
- `noninferiority_paired`: the same question when both answered the same items.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from mltagger.evaluation.stats import wilson_bounds

# Bound on the number of int64 indices a bootstrap chunk holds at once (16 MB).
_CHUNK_CELLS = 2_000_000


def _paired_bools(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    a_arr = np.asarray(a, dtype=bool).ravel()
    b_arr = np.asarray(b, dtype=bool).ravel()
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"A has {a_arr.size} items and B {b_arr.size}: they must be the same")
    return a_arr, b_arr


def mcnemar(a_correct: ArrayLike, b_correct: ArrayLike) -> dict:
    """Exact two-sided McNemar test on per-item correctness of A and B.

    Only the discordant items carry evidence: under "equally good" each of them is as likely to
    favour A as B, so their split is Binomial(a_only + b_only, 1/2). The exact test is used
    rather than the chi-square approximation because a challenger usually differs from the
    champion on a handful of items, far too few for the approximation.

    Returns n (items), a_only (A right, B wrong), b_only (A wrong, B right) and p_value (1.0 when
    no item is discordant).
    """
    a, b = _paired_bools(a_correct, b_correct)
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    discordant = a_only + b_only
    if discordant == 0:
        p = 1.0
    else:
        from scipy.stats import binomtest

        # With p = 1/2 the binomial is symmetric, so scipy's two-sided p-value is
        # min(1, 2 * P(X <= min(a_only, b_only))).
        p = float(binomtest(min(a_only, b_only), discordant, 0.5).pvalue)
    return {"n": int(a.size), "a_only": a_only, "b_only": b_only, "p_value": min(1.0, p)}


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def paired_bootstrap(
    gold: ArrayLike,
    a_tag: ArrayLike,
    a_auto: ArrayLike,
    b_tag: ArrayLike,
    b_auto: ArrayLike,
    *,
    items: ArrayLike | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Coverage and precision of A and B, and percentile bootstrap intervals of B − A.

    Each model is given per item its top answer (`*_tag`) and whether it tagged the item
    automatically (`*_auto`, i.e. did not send it to review). Coverage is the share of items a
    model auto-tags; precision is the share of its auto-tagged items whose answer equals `gold`.
    The two models are scored on the same resampled items in every replicate: that pairing is
    what removes the item-to-item noise both models share from the interval of the difference.

    `items` (boolean, optional) keeps only some items (say, the in-scope ones) before anything
    is computed, so coverage, precision and resampling all refer to that subset.

    A resample in which either model auto-tags nothing has no precision for it; such resamples
    are left out of the precision interval and counted in `precision["dropped"]`, so a caller
    can see when the interval rests on fewer replicates than asked for.

    Returns {"n", "n_boot", "level", "coverage": {...}, "precision": {...}}, where each of the
    two inner dicts holds "a", "b", "difference" (b − a), "low" and "high"; "precision" also
    holds "dropped". Undefined values are NaN.
    """
    gold_arr = np.asarray(gold).ravel()
    a_tag_arr = np.asarray(a_tag).ravel()
    b_tag_arr = np.asarray(b_tag).ravel()
    a_auto_arr, b_auto_arr = _paired_bools(a_auto, b_auto)
    sizes = {x.size for x in (gold_arr, a_tag_arr, b_tag_arr, a_auto_arr)}
    if len(sizes) != 1:
        raise ValueError("gold, answers and auto flags must all have one entry per item")
    if items is not None:
        keep = np.asarray(items, dtype=bool).ravel()
        if keep.size != gold_arr.size:
            raise ValueError(f"items has {keep.size} entries for {gold_arr.size} items")
        gold_arr, a_tag_arr, b_tag_arr = gold_arr[keep], a_tag_arr[keep], b_tag_arr[keep]
        a_auto_arr, b_auto_arr = a_auto_arr[keep], b_auto_arr[keep]
    n = int(gold_arr.size)
    if n == 0:
        raise ValueError("no items to compare")
    if n_boot < 1:
        raise ValueError("n_boot must be at least 1")

    # Per-item counts: auto-tagged, and auto-tagged and right. Every statistic is a ratio of
    # sums of these, so a replicate only needs them summed over its drawn items.
    a_right = (a_auto_arr & (a_tag_arr == gold_arr)).astype(np.int64)
    b_right = (b_auto_arr & (b_tag_arr == gold_arr)).astype(np.int64)
    a_auto_int = a_auto_arr.astype(np.int64)
    b_auto_int = b_auto_arr.astype(np.int64)

    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // n)
    sums = np.empty((n_boot, 4), dtype=np.int64)  # a_auto, a_right, b_auto, b_right
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        sums[start:stop, 0] = a_auto_int[idx].sum(axis=1)
        sums[start:stop, 1] = a_right[idx].sum(axis=1)
        sums[start:stop, 2] = b_auto_int[idx].sum(axis=1)
        sums[start:stop, 3] = b_right[idx].sum(axis=1)

    cov_diff = (sums[:, 2] - sums[:, 0]) / n
    defined = (sums[:, 0] > 0) & (sums[:, 2] > 0)
    prec_diff = sums[defined, 3] / sums[defined, 2] - sums[defined, 1] / sums[defined, 0]

    cov_a = float(a_auto_int.sum() / n)
    cov_b = float(b_auto_int.sum() / n)
    nan = float("nan")
    prec_a = float(a_right.sum() / a_auto_int.sum()) if a_auto_int.sum() else nan
    prec_b = float(b_right.sum() / b_auto_int.sum()) if b_auto_int.sum() else nan
    cov_low, cov_high = _percentile_interval(cov_diff, level)
    prec_low, prec_high = _percentile_interval(prec_diff, level)
    return {
        "n": n,
        "n_boot": int(n_boot),
        "level": level,
        "coverage": {
            "a": cov_a,
            "b": cov_b,
            "difference": cov_b - cov_a,
            "low": cov_low,
            "high": cov_high,
        },
        "precision": {
            "a": prec_a,
            "b": prec_b,
            "difference": prec_b - prec_a,
            "low": prec_low,
            "high": prec_high,
            "dropped": int(n_boot - defined.sum()),
        },
    }


def _one_sided_z(alpha: float) -> float:
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), not {alpha}")
    return NormalDist().inv_cdf(1 - alpha)


def noninferiority(
    successes_b: int,
    n_b: int,
    successes_a: int,
    n_a: int,
    margin: float = 0.03,
    alpha: float = 0.05,
) -> dict:
    """One-sided test that B's proportion is at most `margin` below A's, on separate items.

    H0: pB − pA <= −margin. The lower bound of pB − pA is Newcombe's hybrid score interval: the
    Wilson interval of each proportion at two-sided level 1 − 2·alpha (so each end is a
    one-sided alpha bound), combined as (pB − pA) − sqrt((pB − lB)² + (uA − pA)²). It keeps
    its coverage near proportions of 0 or 1, where precision lives and where the Wald interval
    is too narrow. B is non-inferior when that bound is above −margin.

    Returns difference, lower, margin, alpha, non_inferior, n_a and n_b; with no items on
    either side, difference and lower are None, non_inferior is False and reason says why.
    """
    out = {"margin": margin, "alpha": alpha, "n_a": int(n_a), "n_b": int(n_b)}
    if n_a <= 0 or n_b <= 0:
        return {
            **out,
            "difference": None,
            "lower": None,
            "non_inferior": False,
            "reason": "no items",
        }
    z = _one_sided_z(alpha)
    p_a, p_b = successes_a / n_a, successes_b / n_b
    _, high_a = wilson_bounds(successes_a, n_a, z)
    low_b, _ = wilson_bounds(successes_b, n_b, z)
    difference = p_b - p_a
    lower = difference - float(np.sqrt((p_b - low_b) ** 2 + (high_a - p_a) ** 2))
    return {
        **out,
        "difference": float(difference),
        "lower": lower,
        "non_inferior": bool(lower > -margin),
    }


def noninferiority_paired(
    a_correct: ArrayLike,
    b_correct: ArrayLike,
    margin: float = 0.03,
    alpha: float = 0.05,
) -> dict:
    """One-sided non-inferiority of B against A when both answered the same items.

    The difference of the paired proportions, d = mean(b) − mean(a), has variance
    (b_only + a_only − (b_only − a_only)² / n) / n², which only the discordant items feed; the
    lower bound is the Wald-type d − z·sqrt(var) with z the one-sided 1 − alpha quantile. The
    exact and score intervals for paired proportions (Tango, Newcombe's method 10) cover better
    with few discordant items, but they are much more code for a decision a canary rarely makes
    on so little; be aware that with no discordant item the variance is 0 and the bound is d.

    Returns difference, lower, margin, alpha, non_inferior, n_a and n_b (both the number of
    items), a_only and b_only; with no items, difference and lower are None, non_inferior is
    False and reason says why.
    """
    a, b = _paired_bools(a_correct, b_correct)
    n = int(a.size)
    out = {"margin": margin, "alpha": alpha, "n_a": n, "n_b": n}
    if n == 0:
        return {
            **out,
            "difference": None,
            "lower": None,
            "non_inferior": False,
            "a_only": 0,
            "b_only": 0,
            "reason": "no items",
        }
    z = _one_sided_z(alpha)
    a_only = int(np.sum(a & ~b))
    b_only = int(np.sum(~a & b))
    difference = (b_only - a_only) / n
    var = (b_only + a_only - (b_only - a_only) ** 2 / n) / n**2
    lower = difference - z * float(np.sqrt(max(var, 0.0)))
    return {
        **out,
        "difference": float(difference),
        "lower": float(lower),
        "non_inferior": bool(lower > -margin),
        "a_only": a_only,
        "b_only": b_only,
    }


def paired_weighted_f1(
    gold: ArrayLike,
    a_pred: ArrayLike,
    b_pred: ArrayLike,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Weighted F1 of A and B on the same items, and a paired bootstrap interval of B − A.

    Each resample weighs every item by how often it was drawn (a multinomial draw), the same
    weights for both models, so the per-class counts are three matrix products and 2,000
    resamples of a thousand items take milliseconds. Classes are weighted by their support, as
    scikit-learn's `average="weighted"` does (a class absent from a resample weighs nothing).
    """
    gold, a_pred, b_pred = (np.asarray(x).ravel() for x in (gold, a_pred, b_pred))
    if not (len(gold) == len(a_pred) == len(b_pred)) or not len(gold):
        raise ValueError("gold, A and B must answer the same, non-empty list of items")
    classes = np.unique(np.concatenate([gold, a_pred, b_pred]))
    g = (gold[:, None] == classes[None, :]).astype(float)

    def f1(weights: np.ndarray, pred: np.ndarray) -> np.ndarray:
        p = (pred[:, None] == classes[None, :]).astype(float)
        support, predicted, hits = weights @ g, weights @ p, weights @ (g * p)
        per_class = np.divide(
            2 * hits, support + predicted, out=np.zeros_like(hits), where=support + predicted > 0
        )
        return (per_class * support).sum(axis=1) / support.sum(axis=1)

    ones = np.ones((1, len(gold)))
    a, b = float(f1(ones, a_pred)[0]), float(f1(ones, b_pred)[0])
    rng = np.random.default_rng(seed)
    diffs = []
    chunk = max(1, _CHUNK_CELLS // len(gold))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        w = rng.multinomial(len(gold), np.full(len(gold), 1 / len(gold)), size=size).astype(float)
        diffs.append(f1(w, b_pred) - f1(w, a_pred))
    lo, hi = _percentile_interval(np.concatenate(diffs), level)
    return {"a": a, "b": b, "diff": b - a, "low": lo, "high": hi, "n": len(gold)}
