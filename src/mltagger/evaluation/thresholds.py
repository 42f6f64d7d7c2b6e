"""Choosing review thresholds from held-out predictions: one global threshold for a precision
target (`choose_precision_threshold`) and per-tag thresholds (`choose_tag_thresholds`).

Both promise precision on new data, so both can ask the lower end of a 95% interval to reach the
target instead of the point estimate, which would miss it about half the time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mltagger.core.errors import ConfigError
from mltagger.evaluation.stats import wilson_bounds
from mltagger.models.rule import NEVER, apply_threshold, gate_mask

THRESHOLD_RULES = ("point", "lower_bound")


def choose_precision_threshold(
    conf: np.ndarray, correct: np.ndarray, target: float, rule: str = "point"
) -> float | None:
    """Smallest confidence threshold whose auto-tagged items reach `target` precision.

    rule="point" asks the observed precision to reach the target; rule="lower_bound" asks the
    lower end of its 95% Wilson interval to, so that a precision promise made on ~200 validation
    items still holds on new data (the point estimate would miss it about half the time).
    Candidates are the observed confidences (each one changes the auto-tagged set), so the answer
    is exact rather than limited to a grid. None when no threshold reaches the target.
    """
    if rule not in THRESHOLD_RULES:
        raise ConfigError(f"threshold rule must be one of {THRESHOLD_RULES}, got {rule!r}")
    if len(conf) == 0:
        return None
    order = np.argsort(-conf, kind="stable")
    sorted_conf = conf[order]
    cum_correct = np.cumsum(correct[order])
    # For threshold = sorted_conf[i], the auto set is every item with conf >= that value, i.e. up
    # to the last index holding that same value.
    last = np.searchsorted(-sorted_conf, -sorted_conf, side="right") - 1
    n = last + 1
    precision = cum_correct[last] / n
    if rule == "lower_bound":
        precision = wilson_bounds(cum_correct[last], n)[0]
    ok = np.nonzero(precision >= target - 1e-12)[0]
    if len(ok) == 0:
        return None
    return float(sorted_conf[ok].min())


TAG_RULES = ("pooled", "own", "point")


def _lower_bounds(successes: np.ndarray, n: np.ndarray, prior: tuple[float, float] | None):
    """95% lower bounds of precision: Wilson (prior None) or the Beta posterior's 2.5% quantile."""
    if prior is None:
        return wilson_bounds(successes, n)[0]
    from scipy.stats import beta

    a0, b0 = prior
    return beta.ppf(0.025, successes + a0, n - successes + b0)


def choose_tag_thresholds(
    probs: np.ndarray,
    gold: Sequence[str],
    label_names: Sequence[str],
    target: float,
    *,
    rule: str = "pooled",
    prior_strength: float = 20.0,
) -> dict:
    """One review threshold per predicted tag, each the lowest that keeps its promise.

    For tag k the candidates are the confidences of the items whose top class is k; at a candidate
    t the auto-tagged set is those with confidence >= t, and its precision must reach `target`:
    - "own": the lower end of the tag's own 95% Wilson interval must reach it. Honest, but a tag
      with 24 held-out items can never prove 0.85 and goes to review wholesale.
    - "pooled" (default): the tag's precision gets a Beta prior centred on the precision that all
      tags together reach at the same threshold (every item, whatever its top class, with
      confidence >= t), worth `prior_strength` items; the 2.5% quantile of the posterior
      Beta(s + a, n - s + b) must reach the target. A small tag borrows what the model's
      confidence means across tags and is shrunk toward it; its own errors pull it down; a large
      tag's own items dominate. Both bounds are reported for every tag.
    - "point": the observed precision must reach it (for comparison only).
    A tag whose target no threshold reaches gets NEVER (all its items go to review).

    probs must be held-out probabilities (out-of-fold predictions): chosen on training data the
    promise would mean nothing.
    """
    if rule not in TAG_RULES:
        raise ConfigError(f"per-tag rule must be one of {TAG_RULES}, got {rule!r}")
    probs = np.asarray(probs, dtype=float)
    top = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    correct = np.array([label_names[k] == g for k, g in zip(top, gold, strict=True)], dtype=float)
    # Precision of all items at confidence >= t, for any t: the pooled prior's centre.
    order_all = np.argsort(-conf, kind="stable")
    conf_all = conf[order_all]
    prec_all = np.cumsum(correct[order_all]) / np.arange(1, len(conf) + 1)

    def pooled_mean(t: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(-conf_all, -t, side="right") - 1
        return np.clip(prec_all[np.maximum(idx, 0)], 1e-6, 1 - 1e-6)

    thresholds: dict[str, float] = {}
    per_tag: dict[str, dict] = {}
    for k, tag in enumerate(label_names):
        sel = top == k
        c, ok = conf[sel], correct[sel]
        row = {"num_predicted": int(sel.sum())}
        chosen = None
        if sel.any():
            order = np.argsort(-c, kind="stable")
            sc, cum = c[order], np.cumsum(ok[order])
            last = np.searchsorted(-sc, -sc, side="right") - 1
            n = (last + 1).astype(float)
            s_ = cum[last]
            own = _lower_bounds(s_, n, None)
            m = pooled_mean(sc)
            pooled = _lower_bounds(s_, n, (prior_strength * m, prior_strength * (1 - m)))
            point = s_ / n
            crit = {"own": own, "pooled": pooled, "point": point}[rule]
            hits = np.nonzero(crit >= target - 1e-12)[0]
            if len(hits):
                i = int(hits[np.argmin(sc[hits])])
                chosen = float(sc[i])
                row.update(
                    num_auto=int(n[i]),
                    precision=float(point[i]),
                    own_lower=float(own[i]),
                    pooled_lower=float(pooled[i]),
                    prior_mean=float(m[i]),
                )
        thresholds[tag] = chosen if chosen is not None else NEVER
        row["threshold"] = thresholds[tag]
        if chosen is None:
            row.update(
                num_auto=0, precision=None, own_lower=None, pooled_lower=None, prior_mean=None
            )
        per_tag[tag] = row
    return {
        "thresholds": thresholds,
        "per_tag": per_tag,
        "rule": rule,
        "precision_target": float(target),
        "prior": {
            "centre": "all tags' precision at the same threshold",
            "strength": float(prior_strength),
        },
        "num_items": len(conf),
    }


# The per-tag rules, plus one threshold for every tag (its lower bound must reach the target).
GATED_RULES = (*TAG_RULES, "global")
# Gate thresholds tried; 0.0 is "no gate" (no in-scope probability is below it).
GATE_GRID = tuple(round(0.05 * k, 2) for k in range(0, 20))


def rule_thresholds(
    probs: np.ndarray,
    gold: Sequence[str],
    label_names: Sequence[str],
    target: float,
    rule: str,
    prior_strength: float = 20.0,
) -> float | dict:
    """The topic thresholds of one rule chosen on held-out rows: per tag (`choose_tag_thresholds`)
    or, for "global", one threshold whose 95% lower bound of precision reaches the target
    (NEVER when none does)."""
    if rule == "global":
        probs = np.asarray(probs, dtype=float)
        conf = probs.max(axis=1)
        correct = np.array(
            [label_names[k] == g for k, g in zip(probs.argmax(axis=1), gold, strict=True)],
            dtype=float,
        )
        t = choose_precision_threshold(conf, correct, target, "lower_bound")
        return NEVER if t is None else t
    return choose_tag_thresholds(
        probs, gold, label_names, target, rule=rule, prior_strength=prior_strength
    )["thresholds"]


def gated_counts(probs, gold, in_scope, label_names, threshold, gate, fallback) -> np.ndarray:
    """[topic items, topic items covered, covered right, out-of-scope items, out-of-scope items
    auto-tagged with a topic] under one rule - summed over folds, then turned into rates."""
    gold = np.asarray(gold, dtype=object)
    out = gate_mask(in_scope, gate, len(gold)) if gate > 0 else None
    tags, _, review = apply_threshold(probs, label_names, threshold, fallback, out)
    tags = np.asarray(tags, dtype=object)
    topic_auto = ~review & (tags != fallback)
    oos = gold == fallback
    return np.array(
        [
            (~oos).sum(),
            (topic_auto & ~oos).sum(),
            (topic_auto & ~oos & (tags == gold)).sum(),
            oos.sum(),
            (topic_auto & oos).sum(),
        ],
        dtype=float,
    )


def choose_gated_rule(
    probs: np.ndarray,
    gold: Sequence[str],
    in_scope: np.ndarray,
    folds: Sequence,
    label_names: Sequence[str],
    fallback: str,
    target: float,
    *,
    rule: str = "pooled",
    prior_strength: float = 20.0,
    max_harm: float = 0.02,
    grid: Sequence[float] = GATE_GRID,
) -> dict:
    """The gate threshold and the topic thresholds behind it, chosen on out-of-fold rows.

    For each gate threshold g of the grid the rule is judged cross-fitted: for each fold, the
    topic thresholds are chosen (`rule_thresholds`) on the other folds' rows the gate lets
    through, then applied with the gate to the held-out fold. g is the one with the highest
    topic coverage whose out-of-scope harm (out-of-scope rows auto-tagged with a topic, over all
    folds) is at most `max_harm`; the lowest g on a tie, and the least harmful g when none is
    under (`met: false`). The shipped topic thresholds are then chosen on every row the chosen
    gate lets through. `in_scope` must be cross-fitted too (a gate that saw a row scores it
    too well). Every g's figures are returned (`table`), so the rejected ones can be reported.
    """
    if rule not in GATED_RULES:
        raise ConfigError(f"rule must be one of {GATED_RULES}, got {rule!r}")
    probs = np.asarray(probs, dtype=float)
    gold = np.asarray(gold, dtype=object)
    in_scope = np.asarray(in_scope, dtype=float)
    folds = np.asarray(folds, dtype=object)
    if not (len(probs) == len(gold) == len(in_scope) == len(folds)):
        raise ValueError("probs, gold, in_scope and folds must have one row per item")
    table = []
    seeds = np.array([str(f).split(":")[0] for f in folds], dtype=object)
    for g in grid:
        counts = np.zeros(5)
        for f in sorted(set(folds.tolist()), key=str):
            held = folds == f
            # the same CV seed's other folds: another seed's copy of a held-out row is no
            # held-out evidence about it
            fit = (seeds == str(f).split(":")[0]) & ~held & (in_scope >= g)
            thr = rule_thresholds(
                probs[fit], list(gold[fit]), label_names, target, rule, prior_strength
            )
            counts += gated_counts(
                probs[held], gold[held], in_scope[held], label_names, thr, g, fallback
            )
        n_topic, covered, right, n_oos, harm = counts
        table.append(
            {
                "gate_threshold": float(g),
                "topic_coverage": float(covered / n_topic) if n_topic else 0.0,
                "topic_precision": float(right / covered) if covered else None,
                "oos_auto_topic": float(harm / n_oos) if n_oos else 0.0,
                "num_topic": int(n_topic),
                "num_out_of_scope": int(n_oos),
            }
        )
    under = [r for r in table if r["oos_auto_topic"] <= max_harm + 1e-12]
    if under:
        best = max(under, key=lambda r: (r["topic_coverage"], -r["gate_threshold"]))
    else:
        best = min(table, key=lambda r: (r["oos_auto_topic"], r["gate_threshold"]))
    g = best["gate_threshold"]
    keep = in_scope >= g
    return {
        "gate_threshold": g if g > 0 else None,
        "thresholds": rule_thresholds(
            probs[keep], list(gold[keep]), label_names, target, rule, prior_strength
        ),
        "rule": rule,
        "precision_target": float(target),
        "max_harm": float(max_harm),
        "met": bool(under),
        "cross_fitted": best,
        "table": table,
    }
