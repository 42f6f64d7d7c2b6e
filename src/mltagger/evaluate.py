"""One evaluation for every model: baselines, fine-tuned encoders, exported ONNX models.

`evaluate_predictions` takes gold items and the model's class probabilities and returns a plain
dict (JSON-ready) with overall, per-tag and per-slice figures, the confusion matrix, the
precision–coverage curve with the review threshold, and calibration. The product decision rule
lives here too (`apply_threshold`): below the threshold an item is not auto-tagged, it gets the
fallback tag and goes to human review.

Metric names are the constants in `Metric`: training, sweeps, reports and tests read the same keys,
so a renamed metric fails loudly instead of silently optimising nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from mltagger import slices as slice_registry

log = logging.getLogger(__name__)


class Metric:
    """Flat metric keys (`summary_metrics`), shared by train, sweep, report and tests."""

    ACCURACY = "accuracy"
    PRECISION_MACRO = "precision_macro"
    RECALL_MACRO = "recall_macro"
    F1_MACRO = "f1_macro"
    PRECISION_WEIGHTED = "precision_weighted"
    RECALL_WEIGHTED = "recall_weighted"
    F1_WEIGHTED = "f1_weighted"
    THRESHOLD = "threshold"
    AUTO_PRECISION = "auto_precision"  # precision of auto-applied tags at the threshold
    COVERAGE = "coverage"  # share of items auto-tagged at the threshold
    ECE = "ece"
    NUM_SAMPLES = "num_samples"
    # With out-of-scope items in the data (gold `other`): figures on topic items only, and the
    # harmful case, out-of-scope items auto-tagged with a topic.
    TOPIC_F1_WEIGHTED = "topic_f1_weighted"
    TOPIC_AUTO_PRECISION = "topic_auto_precision"
    TOPIC_COVERAGE = "topic_coverage"
    OOS_AUTO_TOPIC = "oos_auto_topic_rate"

    ALL = (
        ACCURACY,
        PRECISION_MACRO,
        RECALL_MACRO,
        F1_MACRO,
        PRECISION_WEIGHTED,
        RECALL_WEIGHTED,
        F1_WEIGHTED,
        THRESHOLD,
        AUTO_PRECISION,
        COVERAGE,
        ECE,
        NUM_SAMPLES,
        TOPIC_F1_WEIGHTED,
        TOPIC_AUTO_PRECISION,
        TOPIC_COVERAGE,
        OOS_AUTO_TOPIC,
    )


# The figures shown side by side for test and fresh (make train, mltagger evaluate).
HEADLINE_ROWS = (
    ("topic weighted F1", Metric.TOPIC_F1_WEIGHTED),
    ("topic auto-tag precision", Metric.TOPIC_AUTO_PRECISION),
    ("topic coverage", Metric.TOPIC_COVERAGE),
    ("out-of-scope auto-tagged with a topic", Metric.OOS_AUTO_TOPIC),
    ("auto-tag precision, all items", Metric.AUTO_PRECISION),
    ("coverage, all items", Metric.COVERAGE),
)

REASON_CLASSIFIER = "classifier"  # the model's top class, confident enough to apply
REASON_LOW_CONFIDENCE = "low_confidence"  # below the threshold: fallback tag + human review


def reasons(review: np.ndarray) -> list[str]:
    """Why each item got its tag: from the classifier, or the fallback for low confidence."""
    return [REASON_LOW_CONFIDENCE if r else REASON_CLASSIFIER for r in review]


Thresholds = float | Mapping[str, float]


def threshold_vector(threshold: Thresholds, label_names: Sequence[str]) -> np.ndarray:
    """One review threshold per class: a per-tag mapping, or the same number for every class.

    A mapping must name every class: a tag without a threshold would have no rule at all.
    """
    if isinstance(threshold, Mapping):
        missing = [t for t in label_names if t not in threshold]
        if missing:
            raise ValueError(f"per-tag thresholds miss the classes {missing}")
        return np.array([float(threshold[t]) for t in label_names], dtype=float)
    return np.full(len(label_names), float(threshold), dtype=float)


def is_per_tag(threshold: Thresholds | None) -> bool:
    return isinstance(threshold, Mapping)


def apply_threshold(
    probs: np.ndarray,
    label_names: Sequence[str],
    threshold: Thresholds,
    fallback_tag: str = "other",
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The product's decision rule: (tags, confidence, needs_review) for each row of probs.

    Confidence is the top probability. Below the threshold of the top class (one number for all
    classes, or one per tag) the tag is the fallback tag and the item needs review; otherwise the
    top class is applied automatically.
    """
    probs = np.asarray(probs, dtype=float)
    top = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    review = conf < threshold_vector(threshold, label_names)[top]
    tags = [fallback_tag if r else label_names[k] for k, r in zip(top, review, strict=True)]
    return tags, conf, review


def _prf(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy and macro/weighted P/R/F1 over the `labels` that occur in gold or pred."""
    out = {Metric.NUM_SAMPLES: len(gold)}
    if not gold:
        return out
    out[Metric.ACCURACY] = float(np.mean([g == p for g, p in zip(gold, pred, strict=True)]))
    present = [t for t in labels if t in set(gold) | set(pred)]
    for avg in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            gold, pred, labels=present, average=avg, zero_division=0
        )
        out[f"precision_{avg}"] = float(p)
        out[f"recall_{avg}"] = float(r)
        out[f"f1_{avg}"] = float(f)
    return out


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """95% Wilson score interval for a proportion; None when n == 0.

    Small tags have 5-10 test items, where a precision of 1.0 means little: the interval says how
    little, so comparisons between models are not read off noise.
    """
    if n == 0:
        return None
    phat = successes / n
    denom = 1 + z * z / n
    centre = (phat + z * z / (2 * n)) / denom
    half = z * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _per_class(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> dict:
    p, r, f, s = precision_recall_fscore_support(
        gold, pred, labels=list(labels), average=None, zero_division=0
    )
    n_pred = {t: sum(1 for x in pred if x == t) for t in labels}
    n_right = {t: sum(1 for g, x in zip(gold, pred, strict=True) if x == t == g) for t in labels}
    return {
        t: {
            "precision": float(p[i]),
            "precision_ci95": wilson_interval(n_right[t], n_pred[t]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "num_samples": int(s[i]),
            "num_predicted": n_pred[t],
        }
        for i, t in enumerate(labels)
    }


def coverage_curve(
    conf: np.ndarray, correct: np.ndarray, thresholds: Sequence[float]
) -> list[dict]:
    """Precision of auto-tagged items (confidence >= t) and coverage, for each threshold t."""
    n = len(conf)
    rows = []
    for t in thresholds:
        auto = conf >= t
        k = int(auto.sum())
        rows.append(
            {
                "threshold": float(t),
                "coverage": k / n if n else 0.0,
                "precision": float(correct[auto].mean()) if k else None,
                "num_auto": k,
            }
        )
    return rows


THRESHOLD_RULES = ("point", "lower_bound")


def choose_threshold(
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
        raise ValueError(f"threshold rule must be one of {THRESHOLD_RULES}, got {rule!r}")
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
        z = 1.96
        centre = (precision + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(precision * (1 - precision) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        precision = centre - half
    ok = np.nonzero(precision >= target - 1e-12)[0]
    if len(ok) == 0:
        return None
    return float(sorted_conf[ok].min())


TAG_RULES = ("pooled", "own", "point")
NEVER = 1.01  # a threshold no probability reaches: the tag always goes to review


def _lower_bounds(successes: np.ndarray, n: np.ndarray, prior: tuple[float, float] | None):
    """95% lower bounds of precision: Wilson (prior None) or the Beta posterior's 2.5% quantile."""
    if prior is None:
        z = 1.96
        p = successes / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
        return centre - half
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
        raise ValueError(f"per-tag rule must be one of {TAG_RULES}, got {rule!r}")
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


def threshold_json(threshold: Thresholds | None) -> float | dict | None:
    """A threshold as JSON: a number, a {tag: number} mapping, None for "never auto-tag"."""
    if threshold is None:
        return None
    if is_per_tag(threshold):
        return {t: (float(v) if np.isfinite(v) else None) for t, v in threshold.items()}
    return float(threshold) if np.isfinite(threshold) else None


def calibration(conf: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> dict:
    """Expected calibration error over equal-width confidence bins, with the bins for plotting."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    bins, ece, n = [], 0.0, len(conf)
    for b in range(n_bins):
        sel = idx == b
        k = int(sel.sum())
        acc = float(correct[sel].mean()) if k else None
        mean_conf = float(conf[sel].mean()) if k else None
        if k:
            ece += k / n * abs(acc - mean_conf)
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "num_samples": k,
                "accuracy": acc,
                "confidence": mean_conf,
            }
        )
    return {Metric.ECE: float(ece) if n else None, "bins": bins}


def _block(
    gold: list[str],
    probs: np.ndarray,
    label_names: Sequence[str],
    all_tags: list[str],
    threshold: Thresholds | None,
    fallback_tag: str,
) -> dict:
    """Figures shared by the whole set and by each slice."""
    pred = [label_names[k] for k in probs.argmax(axis=1)] if len(gold) else []
    out = _prf(gold, pred, all_tags)
    out["per_class"] = _per_class(gold, pred, all_tags) if gold else {}
    if threshold is not None and gold:
        tags, _, review = apply_threshold(probs, label_names, threshold, fallback_tag)
        auto = ~review
        auto_gold = [g for g, a in zip(gold, auto, strict=True) if a]
        auto_pred = [p for p, a in zip(tags, auto, strict=True) if a]
        out["at_threshold"] = {
            Metric.THRESHOLD: threshold_json(threshold),
            Metric.AUTO_PRECISION: float(
                np.mean([g == p for g, p in zip(auto_gold, auto_pred, strict=True)])
            )
            if auto_gold
            else None,
            Metric.COVERAGE: float(auto.mean()),
            "num_auto": int(auto.sum()),
            "num_review": int(review.sum()),
            "per_class_precision": {
                t: v["precision"]
                for t, v in _per_class(auto_gold, auto_pred, all_tags).items()
                if v["num_predicted"]
            }
            if auto_gold
            else {},
            # Per applied tag: how many were auto-applied, how many right, the 95% interval.
            "per_class_auto": {
                t: {
                    "num_auto": v["num_predicted"],
                    "precision": v["precision"] if v["num_predicted"] else None,
                    "precision_ci95": v["precision_ci95"],
                }
                for t, v in _per_class(auto_gold, auto_pred, all_tags).items()
            }
            if auto_gold
            else {},
        }
    return out


def scope_report(
    gold: Sequence[str],
    probs: np.ndarray,
    label_names: Sequence[str],
    threshold: Thresholds,
    fallback_tag: str,
) -> dict | None:
    """Topic items and out-of-scope items (gold == fallback tag) judged separately.

    Topic items count as covered when a topic tag is applied automatically; auto-tag precision is
    the share of those whose topic is right. A topic item auto-tagged with the fallback tag is
    neither: it is lost (`lost_to_other`: applied without review, so nobody sees it), reported
    beside coverage. Out-of-scope items end in one of three ways: the classifier answers the
    fallback tag (`as_other`), they go to review (`to_review`), or they are auto-tagged with a
    topic (`auto_topic`, the harmful case). None when the data has no out-of-scope items.
    """
    gold_arr = np.array(gold, dtype=object)
    oos = gold_arr == fallback_tag
    if not oos.any():
        return None
    probs = np.asarray(probs, dtype=float)
    tags, _, review = apply_threshold(probs, label_names, threshold, fallback_tag)
    top = np.array([label_names[k] for k in probs.argmax(axis=1)], dtype=object)
    applied = np.array(tags, dtype=object)
    auto = ~review
    n_oos = int(oos.sum())
    out_of_scope = {
        Metric.NUM_SAMPLES: n_oos,
        "as_other": float(np.mean(auto[oos] & (top[oos] == fallback_tag))),
        "to_review": float(np.mean(review[oos])),
        "auto_topic": float(np.mean(auto[oos] & (top[oos] != fallback_tag))),
        # Before the threshold: how often the top class itself is a topic.
        "top_is_topic": float(np.mean(top[oos] != fallback_tag)),
    }
    topic = ~oos
    topic_tags = [t for t in dict.fromkeys([*label_names, *gold]) if t != fallback_tag]
    t_gold = list(gold_arr[topic])
    topics = _prf(t_gold, list(top[topic]), topic_tags)
    covered = auto & topic & (applied != fallback_tag)
    k = int(covered.sum())
    topics[Metric.AUTO_PRECISION] = (
        float(np.mean(applied[covered] == gold_arr[covered])) if k else None
    )
    topics[Metric.COVERAGE] = float(k / topic.sum()) if topic.any() else 0.0
    topics["num_auto"] = k
    topics["lost_to_other"] = (
        float(np.mean((auto & (applied == fallback_tag))[topic])) if topic.any() else 0.0
    )
    topics["answered_other"] = float(np.mean(top[topic] == fallback_tag)) if topic.any() else 0.0
    return {"topics": topics, "out_of_scope": out_of_scope}


def evaluate_predictions(
    items: Sequence[dict],
    probs: np.ndarray,
    label_names: Sequence[str],
    *,
    tags: Sequence[str] | None = None,
    fallback_tag: str = "other",
    precision_target: float = 0.85,
    threshold_rule: str = "point",
    threshold: Thresholds | None = None,
    slice_names: Sequence[str] | None = None,
    min_slice_size: int = 30,
    calibration_bins: int = 10,
) -> dict:
    """The full evaluation report for one model on one set of gold items.

    probs[i, k] is the probability of label_names[k] for items[i]. `threshold` is the review
    threshold to apply (chosen on validation data); when None, the threshold that reaches
    `precision_target` on *these* items is chosen and applied, which is right for the validation
    set and optimistic anywhere else. Either way the report also says which threshold this data
    alone would need (`coverage.threshold_for_target`).
    """
    probs = np.asarray(probs, dtype=float)
    if probs.shape != (len(items), len(label_names)):
        raise ValueError(
            f"probs has shape {probs.shape}, expected ({len(items)}, {len(label_names)})"
        )
    gold = [it["tag"] for it in items]
    # Tags reported: the model's classes and every gold tag, in the approved list's order.
    wanted = set(label_names) | set(gold)
    order = list(tags) if tags is not None else list(label_names)
    all_tags = [t for t in order if t in wanted] + [
        t for t in dict.fromkeys(gold) if t not in order
    ]
    pred_idx = probs.argmax(axis=1) if len(items) else np.array([], dtype=int)
    conf = probs.max(axis=1) if len(items) else np.array([])
    correct = np.array(
        [label_names[k] == g for k, g in zip(pred_idx, gold, strict=True)], dtype=float
    )

    own_threshold = choose_threshold(conf, correct, precision_target, threshold_rule)
    chosen_on = "given" if threshold is not None else "this_data"
    if threshold is None:
        # Unreachable target: send everything to review rather than auto-tag below target.
        threshold = own_threshold if own_threshold is not None else float("inf")

    overall = _block(gold, probs, label_names, all_tags, threshold, fallback_tag)
    per_class = overall.pop("per_class")
    at_threshold = overall.pop("at_threshold", None)

    scope = scope_report(gold, probs, label_names, threshold, fallback_tag) if gold else None
    if scope is not None:
        scope["threshold"] = threshold_json(threshold)
        # The trade-off people weigh: topic precision and coverage against out-of-scope harm.
        scope["curve"] = []
        for t in np.round(np.linspace(0.0, 1.0, 41), 3):
            at_t = scope_report(gold, probs, label_names, float(t), fallback_tag)
            scope["curve"].append(
                {
                    "threshold": float(t),
                    "topic_precision": at_t["topics"][Metric.AUTO_PRECISION],
                    "topic_coverage": at_t["topics"][Metric.COVERAGE],
                    "oos_auto_topic": at_t["out_of_scope"]["auto_topic"],
                }
            )

    names = list(slice_names) if slice_names is not None else list(slice_registry.REGISTRY)
    slices: dict[str, dict] = {}
    for name in names:
        mask = np.array(slice_registry.REGISTRY[name].mask(items), dtype=bool)
        n = int(mask.sum())
        if n == 0 and name in slice_registry.GOLD_SLICES:
            continue  # e.g. out_of_scope on data without out-of-scope items
        sub_gold = [g for g, m in zip(gold, mask, strict=True) if m]
        block = _block(sub_gold, probs[mask], label_names, all_tags, threshold, fallback_tag)
        block["description"] = slice_registry.REGISTRY[name].description
        block["noisy"] = n < min_slice_size
        block["per_class_precision"] = {
            t: v["precision"] for t, v in block.pop("per_class", {}).items() if v["num_predicted"]
        }
        slices[name] = block
    noisy = [f"{k} ({v[Metric.NUM_SAMPLES]})" for k, v in slices.items() if v["noisy"]]
    if noisy:
        log.warning(
            "%d of %d slices have fewer than %d items, their figures are noisy: %s",
            len(noisy),
            len(slices),
            min_slice_size,
            ", ".join(noisy),
        )

    grid = np.round(np.linspace(0.0, 1.0, 101), 2)
    return {
        Metric.NUM_SAMPLES: len(items),
        "labels": list(label_names),
        "overall": overall,
        "per_class": per_class,
        "slices": slices,
        "confusion_matrix": {
            "labels": all_tags,
            "matrix": confusion_matrix(
                gold, [label_names[k] for k in pred_idx], labels=all_tags
            ).tolist()
            if gold
            else [],
        },
        "coverage": {
            "precision_target": precision_target,
            "threshold_rule": threshold_rule,
            "threshold_for_target": own_threshold,
            "target_reachable": own_threshold is not None,
            "threshold": threshold_json(threshold),
            "per_tag": is_per_tag(threshold),
            "threshold_chosen_on": chosen_on,
            "at_threshold": at_threshold,
            "curve": coverage_curve(conf, correct, grid),
        },
        "calibration": calibration(conf, correct, calibration_bins),
        "scope": scope,
    }


def summary_metrics(report: dict, prefix: str = "") -> dict[str, float]:
    """The headline numbers as flat `prefix/key` pairs (for W&B summaries, sweeps, tables)."""
    out = {k: v for k, v in report["overall"].items() if isinstance(v, int | float)}
    at = report["coverage"]["at_threshold"] or {}
    for key in (Metric.THRESHOLD, Metric.AUTO_PRECISION, Metric.COVERAGE):
        if isinstance(at.get(key), int | float):  # a per-tag threshold is reported per tag
            out[key] = at[key]
    if report["calibration"][Metric.ECE] is not None:
        out[Metric.ECE] = report["calibration"][Metric.ECE]
    scope = report.get("scope")
    if scope:
        t = scope["topics"]
        for key, src in (
            (Metric.TOPIC_F1_WEIGHTED, Metric.F1_WEIGHTED),
            (Metric.TOPIC_AUTO_PRECISION, Metric.AUTO_PRECISION),
            (Metric.TOPIC_COVERAGE, Metric.COVERAGE),
        ):
            if t.get(src) is not None:
                out[key] = t[src]
        out[Metric.OOS_AUTO_TOPIC] = scope["out_of_scope"]["auto_topic"]
    unknown = set(out) - set(Metric.ALL)
    if unknown:  # a new figure must be named in Metric first
        raise KeyError(f"metric keys not declared in Metric: {sorted(unknown)}")
    return {f"{prefix}{k}": float(v) for k, v in out.items()}


def predictions_records(
    items: Sequence[dict],
    probs: np.ndarray,
    label_names: Sequence[str],
    threshold: float,
    fallback_tag: str = "other",
) -> list[dict]:
    """One record per item for error analysis: gold, top class, applied tag, scores."""
    tags, conf, review = apply_threshold(probs, label_names, threshold, fallback_tag)
    return [
        {
            "id": it["id"],
            "text": it["text"],
            "gold": it.get("tag"),
            "predicted": label_names[int(np.argmax(p))],
            "tag": tag,
            "confidence": float(c),
            "needs_review": bool(r),
            "reason": REASON_LOW_CONFIDENCE if r else REASON_CLASSIFIER,
            "scores": {t: round(float(x), 6) for t, x in zip(label_names, p, strict=True)},
        }
        for it, p, tag, c, r in zip(items, probs, tags, conf, review, strict=True)
    ]


# --------------------------------------------------------------------------------------------
# Writing the report
# --------------------------------------------------------------------------------------------


def fmt(x: float | dict | None, pct: bool = False) -> str:
    if x is None:
        return "—"
    if isinstance(x, dict):
        return "per tag"
    return f"{100 * x:.1f}%" if pct else f"{x:.3f}"


def per_class_table(report: dict) -> str:
    """Markdown table tag × precision/recall/F1/support (the table `make baselines` prints)."""
    at_all = report["coverage"]["at_threshold"] or {}
    at = at_all.get("per_class_precision", {})
    auto = at_all.get("per_class_auto", {})
    thr = report["coverage"].get("threshold")
    lines = [
        "| tag | precision | 95% CI | recall | f1 | support | threshold | auto-tagged "
        "| auto-tag precision | its 95% CI |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def ci_txt(ci) -> str:
        return f"{ci[0]:.2f}–{ci[1]:.2f}" if ci else "—"

    for tag, v in report["per_class"].items():
        a = auto.get(tag, {})
        t = thr.get(tag) if isinstance(thr, dict) else thr
        lines.append(
            f"| {tag} | {fmt(v['precision'])} | {ci_txt(v.get('precision_ci95'))} | "
            f"{fmt(v['recall'])} | {fmt(v['f1'])} | {v['num_samples']} | {fmt(t)} | "
            f"{a.get('num_auto', '—')} | {fmt(at.get(tag))} | {ci_txt(a.get('precision_ci95'))} |"
        )
    return "\n".join(lines)


def _operating_points_md(rows: list[dict] | None) -> list[str]:
    if not rows:
        return []
    scoped = any("test_oos_auto_topic" in r for r in rows)
    head = "| target | threshold | val precision | val coverage | test precision | test coverage |"
    rule = "|---:|---:|---:|---:|---:|---:|"
    if scoped:
        head += " topic precision | topic coverage | out-of-scope auto-tagged with a topic |"
        rule += "---:|---:|---:|"
    intro = "Other precision targets, threshold chosen on validation data each time:"
    lines = [intro, "", head, rule]
    for r in rows:
        line = (
            f"| {fmt(r['precision_target'], True)} | {fmt(r['threshold'])} | "
            f"{fmt(r.get('val_precision'), True)} | {fmt(r.get('val_coverage'), True)} | "
            f"{fmt(r.get('test_precision'), True)} | {fmt(r.get('test_coverage'), True)} |"
        )
        if scoped:
            line += (
                f" {fmt(r.get('test_topic_precision'), True)} |"
                f" {fmt(r.get('test_topic_coverage'), True)} |"
                f" {fmt(r.get('test_oos_auto_topic'), True)} |"
            )
        lines.append(line)
    return [*lines, ""]


def _scope_md(scope: dict | None) -> list[str]:
    if not scope:
        return []
    t, o = scope["topics"], scope["out_of_scope"]
    return [
        "## Topic items and out-of-scope items",
        "",
        "| items | n | weighted F1 | auto-tag precision | coverage | answered `other` "
        "| to review | auto-tagged with a topic |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| topic | {t[Metric.NUM_SAMPLES]} | {fmt(t.get(Metric.F1_WEIGHTED))} | "
        f"{fmt(t.get(Metric.AUTO_PRECISION), True)} | {fmt(t.get(Metric.COVERAGE), True)} | "
        f"{fmt(t.get('answered_other'), True)} | — | — |",
        f"| out-of-scope | {o[Metric.NUM_SAMPLES]} | — | — | — | "
        f"{fmt(o['as_other'], True)} | {fmt(o['to_review'], True)} | "
        f"**{fmt(o['auto_topic'], True)}** |",
        "",
    ]


def comparison_table(reports: dict[str, dict]) -> str:
    """Markdown, one row per model: its headline figures on one split, same threshold protocol.

    With out-of-scope items in the data, topic-only figures and the harmful out-of-scope rate
    are added, so the trade-off between them is read in one table.
    """
    scoped = any(r.get("scope") for r in reports.values())
    head = (
        "| model | accuracy | weighted F1 | macro F1 | threshold (val) | auto-tag precision "
        "| coverage |"
    )
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if scoped:
        head += (
            " topic weighted F1 | topic auto-tag precision | topic coverage "
            "| out-of-scope auto-tagged with a topic |"
        )
        rule += "---:|---:|---:|---:|"
    lines = [head, rule]
    for name, rep in reports.items():
        o = rep["overall"]
        at = rep["coverage"]["at_threshold"] or {}
        line = (
            f"| {name} | {fmt(o.get(Metric.ACCURACY))} | {fmt(o.get(Metric.F1_WEIGHTED))} | "
            f"{fmt(o.get(Metric.F1_MACRO))} | {fmt(at.get(Metric.THRESHOLD))} | "
            f"{fmt(at.get(Metric.AUTO_PRECISION))} | {fmt(at.get(Metric.COVERAGE))} |"
        )
        if scoped:
            sc = rep.get("scope") or {}
            t, oos = sc.get("topics", {}), sc.get("out_of_scope", {})
            line += (
                f" {fmt(t.get(Metric.F1_WEIGHTED))} | {fmt(t.get(Metric.AUTO_PRECISION))} | "
                f"{fmt(t.get(Metric.COVERAGE))} | {fmt(oos.get('auto_topic'))} |"
            )
        lines.append(line)
    return "\n".join(lines)


def render_markdown(report: dict, title: str) -> str:
    """A readable report.md: headline, per tag, per slice, coverage, calibration."""
    o, cov = report["overall"], report["coverage"]
    at = cov["at_threshold"] or {}
    target = cov["precision_target"]
    thr = cov["threshold"]
    lines = [
        f"# {title}",
        "",
        f"{report[Metric.NUM_SAMPLES]} items. Accuracy {fmt(o.get(Metric.ACCURACY))}, "
        f"weighted F1 {fmt(o.get(Metric.F1_WEIGHTED))}, macro F1 {fmt(o.get(Metric.F1_MACRO))}.",
        "",
        "## Auto-tagging at the review threshold",
        "",
        f"Precision target {fmt(target, True)}"
        + (
            " (for the lower end of the 95% interval of validation precision)"
            if cov.get("threshold_rule") == "lower_bound"
            else ""
        )
        + f". Threshold {fmt(thr)} "
        f"(chosen on {'validation data' if cov['threshold_chosen_on'] == 'given' else 'this data'})"
        f": auto-tag precision **{fmt(at.get(Metric.AUTO_PRECISION), True)}** at coverage "
        f"**{fmt(at.get(Metric.COVERAGE), True)}** ({at.get('num_auto', 0)} auto-tagged, "
        f"{at.get('num_review', 0)} to review).",
        "",
        ("This data alone would need threshold " + fmt(cov["threshold_for_target"]) + ".")
        if cov["target_reachable"]
        else "**No threshold reaches the target on this data: every item would go to review.**",
        "",
        *_scope_md(report.get("scope")),
        *_operating_points_md(cov.get("operating_points")),
        "## Per tag",
        "",
        per_class_table(report),
        "",
        "## Per slice",
        "",
        "Slices with fewer items than the minimum are marked noisy (⚠).",
        "",
        "| slice | n | accuracy | weighted F1 | auto-tag precision | coverage "
        "| per-tag precision |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for name, s in report["slices"].items():
        sat = s.get("at_threshold") or {}
        per_tag = ", ".join(f"{t}: {fmt(p)}" for t, p in s["per_class_precision"].items())
        lines.append(
            f"| {name}{' ⚠' if s['noisy'] else ''} | {s[Metric.NUM_SAMPLES]} | "
            f"{fmt(s.get(Metric.ACCURACY))} | {fmt(s.get(Metric.F1_WEIGHTED))} | "
            f"{fmt(sat.get(Metric.AUTO_PRECISION))} | {fmt(sat.get(Metric.COVERAGE))} | "
            f"{per_tag} |"
        )
    lines += [
        "",
        "## Precision–coverage",
        "",
        "| threshold | coverage | precision |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {r['threshold']:.2f} | {fmt(r['coverage'])} | {fmt(r['precision'])} |"
        for r in cov["curve"]
        if round(r["threshold"] * 100) % 10 == 0
    ]
    lines += [
        "",
        "## Calibration",
        "",
        f"Expected calibration error: {fmt(report['calibration'][Metric.ECE])}.",
        "",
        "Plots: `confusion_matrix.png`, `precision_coverage.png`, `reliability.png`.",
        "",
    ]
    return "\n".join(lines)


def write_report(
    report: dict, out_dir: str | Path, title: str, predictions: Sequence[dict] | None = None
) -> Path:
    """metrics.json, report.md, the three plots and (optionally) predictions.jsonl in out_dir."""
    from mltagger import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(render_markdown(report, title))
    plots.confusion_matrix_plot(report, out / "confusion_matrix.png", title)
    plots.precision_coverage_plot(report, out / "precision_coverage.png", title)
    plots.reliability_plot(report, out / "reliability.png", title)
    if report.get("scope"):
        plots.scope_tradeoff_plot(report, out / "out_of_scope_tradeoff.png", title)
    if predictions is not None:
        with (out / "predictions.jsonl").open("w", encoding="utf-8") as fh:
            for rec in predictions:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return out


def operating_points(
    val_items: Sequence[dict],
    val_probs: np.ndarray,
    test_items: Sequence[dict],
    test_probs: np.ndarray,
    label_names: Sequence[str],
    targets: Sequence[float],
    fallback_tag: str = "other",
    rule: str = "point",
) -> list[dict]:
    """For each precision target: the threshold val needs, and what it gives on val and test.

    The product runs at one target, but a reader weighing "more precision, less coverage" wants
    the whole trade-off with thresholds chosen the honest way (on val), not read off the test curve.
    With out-of-scope items in test, each row also has the topic-only figures and the share of
    out-of-scope items auto-tagged with a topic.
    """

    def conf_correct(items, probs):
        probs = np.asarray(probs, dtype=float)
        gold = [it["tag"] for it in items]
        pred = probs.argmax(axis=1)
        correct = np.array([label_names[k] == g for k, g in zip(pred, gold, strict=True)], float)
        return probs.max(axis=1), correct

    def at(conf, correct, t):
        point = coverage_curve(conf, correct, [t])[0]
        return point["precision"], point["coverage"]

    vc, vk = conf_correct(val_items, val_probs)
    tc, tk = conf_correct(test_items, test_probs)
    test_gold = [it["tag"] for it in test_items]
    rows = []
    for target in targets:
        t = choose_threshold(vc, vk, float(target), rule)
        row = {"precision_target": float(target), "threshold": t}
        if t is not None:
            row["val_precision"], row["val_coverage"] = at(vc, vk, t)
            row["test_precision"], row["test_coverage"] = at(tc, tk, t)
            scope = scope_report(test_gold, test_probs, label_names, t, fallback_tag)
            if scope:
                row["test_topic_precision"] = scope["topics"][Metric.AUTO_PRECISION]
                row["test_topic_coverage"] = scope["topics"][Metric.COVERAGE]
                row["test_oos_auto_topic"] = scope["out_of_scope"]["auto_topic"]
        rows.append(row)
    return rows


def eval_kwargs(data, eval_cfg, labels: Sequence[str]) -> dict:
    """evaluate_predictions arguments from a PreparedData and the eval config (conf/eval)."""
    return {
        "tags": data.tags,
        "fallback_tag": data.fallback_tag,
        "precision_target": eval_cfg.precision_target,
        "threshold_rule": eval_cfg.get("threshold_rule", "point"),
        "slice_names": [
            *slice_registry.content_slices(),
            *sorted(slice_registry.GOLD_SLICES),  # skipped when empty
            *slice_registry.register_tag_slices(labels),
        ],
        "min_slice_size": eval_cfg.min_slice_size,
        "calibration_bins": eval_cfg.calibration_bins,
    }


def evaluate_val_test(
    data,
    labels: Sequence[str],
    val_probs: np.ndarray,
    test_probs: np.ndarray,
    eval_cfg,
    out_dir: str | Path | None = None,
    title: str = "",
    threshold: float | None = None,
) -> tuple[dict, dict, float]:
    """The protocol every model follows: choose the review threshold on val, apply it to test.

    A given `threshold` (e.g. the one a shipped model folder carries) is applied to both instead.

    Returns (val_report, test_report, applied threshold; inf when the target is unreachable,
    i.e. everything goes to review). With out_dir, writes both reports and their predictions.
    """
    kw = eval_kwargs(data, eval_cfg, labels)
    val_items = data.splits["val"][: len(val_probs)]
    test_items = data.splits["test"][: len(test_probs)]
    val_report = evaluate_predictions(val_items, val_probs, labels, threshold=threshold, **kw)
    if threshold is None:
        threshold = val_report["coverage"]["threshold"]
    applied = threshold if threshold is not None else float("inf")
    test_report = evaluate_predictions(test_items, test_probs, labels, threshold=applied, **kw)
    test_report["coverage"]["operating_points"] = operating_points(
        val_items,
        val_probs,
        test_items,
        test_probs,
        labels,
        eval_cfg.get("operating_points", []),
        data.fallback_tag,
        kw["threshold_rule"],
    )
    if out_dir is not None:
        for split, report, items, probs in (
            ("val", val_report, val_items, val_probs),
            ("test", test_report, test_items, test_probs),
        ):
            name = "validation" if split == "val" else split
            write_report(
                report,
                Path(out_dir) / split,
                f"{title} — {name}",
                predictions_records(items, probs, labels, applied, data.fallback_tag),
            )
    return val_report, test_report, applied
