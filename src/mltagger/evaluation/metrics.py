"""One evaluation for every model: baselines, fine-tuned encoders, exported ONNX models.

`evaluate_predictions` takes gold items and the model's class probabilities and returns a plain
dict (JSON-ready) with overall, per-tag and per-slice figures, the confusion matrix, the
precision–coverage curve with the review threshold, and calibration. It scores the product's
decision rule (`mltagger.models.rule.apply_threshold`) exactly as the service applies it.

Metric names are the constants in `Metric` (in `metric_names`, importable without scikit-learn):
training, sweeps, reports and tests read the same keys, so a renamed metric fails loudly instead
of silently optimising nothing.

Over 400 lines because `evaluate_predictions` and the per-tag, per-slice and scope blocks it
assembles are one report; splitting them would scatter the keys of one JSON document.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from mltagger.data import slices as slice_registry
from mltagger.evaluation.metric_names import Metric
from mltagger.evaluation.stats import wilson_bounds
from mltagger.evaluation.thresholds import choose_precision_threshold
from mltagger.models.rule import (
    Thresholds,
    apply_threshold,
    is_per_tag,
    reason,
    threshold_json,
)

log = logging.getLogger(__name__)


# The figures shown side by side for test and fresh (make train, mltagger evaluate).
HEADLINE_ROWS = (
    ("lowest per-tag auto-tag precision", Metric.LOWEST_TAG_AUTO_PRECISION),
    ("topic weighted F1", Metric.TOPIC_F1_WEIGHTED),
    ("topic auto-tag precision", Metric.TOPIC_AUTO_PRECISION),
    ("topic coverage", Metric.TOPIC_COVERAGE),
    ("out-of-scope auto-tagged with a topic", Metric.OOS_AUTO_TOPIC),
    ("  of them not ML at all", Metric.OOS_AUTO_TOPIC_NOT_ML),
    ("  of them out-of-scope ML", Metric.OOS_AUTO_TOPIC_ML),
    ("auto-tag precision, all items", Metric.AUTO_PRECISION),
    ("coverage, all items", Metric.COVERAGE),
)


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
    lo, hi = wilson_bounds(successes, n, z)
    return float(max(0.0, lo)), float(min(1.0, hi))


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
    out_of_scope: np.ndarray | None = None,
) -> dict:
    """Figures shared by the whole set and by each slice."""
    pred = [label_names[k] for k in probs.argmax(axis=1)] if len(gold) else []
    out = _prf(gold, pred, all_tags)
    out["per_class"] = _per_class(gold, pred, all_tags) if gold else {}
    if threshold is not None and gold:
        tags, _, review = apply_threshold(probs, label_names, threshold, fallback_tag, out_of_scope)
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
            # Per gold tag: the share of its items given a tag automatically (rightly or not),
            # the coverage each tag's promise is read with. A topic's items count when they get
            # a topic: `other` applied to them covers nothing; the fallback tag's items count
            # when they get `other` (a topic applied to them is harm, not coverage).
            "per_class_coverage": {
                t: float(
                    np.mean(
                        [
                            a and ((p == fallback_tag) == (t == fallback_tag))
                            for g, a, p in zip(gold, auto, tags, strict=True)
                            if g == t
                        ]
                    )
                )
                for t in all_tags
                if t in gold
            },
        }
    return out


def _harm_by_kind(items, probs, label_names, threshold, fallback_tag, out_of_scope) -> dict:
    """Out-of-scope harm apart for items that are not ML at all (`non_ml`, the fresh set marks
    them) and for out-of-scope ML: the product promises both, with different limits."""
    tags, _, review = apply_threshold(probs, label_names, threshold, fallback_tag, out_of_scope)
    out = {}
    for key, want in (("not_ml", True), ("ml", False)):
        rows = [
            i
            for i, it in enumerate(items)
            if it["tag"] == fallback_tag and bool(it.get("non_ml")) == want
        ]
        harm = [not review[i] and tags[i] != fallback_tag for i in rows]
        out[f"auto_topic_{key}"] = float(np.mean(harm)) if rows else None
        out[f"num_{key}"] = len(rows)
    return out


def scope_report(
    gold: Sequence[str],
    probs: np.ndarray,
    label_names: Sequence[str],
    threshold: Thresholds,
    fallback_tag: str,
    out_of_scope: np.ndarray | None = None,
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
    tags, _, review = apply_threshold(probs, label_names, threshold, fallback_tag, out_of_scope)
    gated = np.zeros(len(gold), dtype=bool) if out_of_scope is None else np.asarray(out_of_scope)
    top = np.array([label_names[k] for k in probs.argmax(axis=1)], dtype=object)
    applied = np.array(tags, dtype=object)
    auto = ~review
    n_oos = int(oos.sum())
    out_of_scope = {
        Metric.NUM_SAMPLES: n_oos,
        "as_other": float(np.mean(auto[oos] & (applied[oos] == fallback_tag))),
        "to_review": float(np.mean(review[oos])),
        "auto_topic": float(np.mean(auto[oos] & (applied[oos] != fallback_tag))),
        # Stopped by the out-of-scope gate (part of as_other; 0 without a gate).
        "gated": float(np.mean(gated[oos])),
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
    topics["gated"] = float(np.mean(gated[topic])) if topic.any() else 0.0
    return {"topics": topics, "out_of_scope": out_of_scope}


def _scope_with_curve(items, gold, probs, label_names, threshold, fallback_tag, out_of_scope):
    """The topic/out-of-scope report under the rule, harm apart by kind where the data marks it,
    and the trade-off curve people weigh (topic precision and coverage against harm)."""
    scope = scope_report(gold, probs, label_names, threshold, fallback_tag, out_of_scope)
    if scope is None:
        return None
    if any("non_ml" in it for it in items):
        scope["out_of_scope"].update(
            _harm_by_kind(items, probs, label_names, threshold, fallback_tag, out_of_scope)
        )
    scope["threshold"] = threshold_json(threshold)
    scope["curve"] = []
    for t in np.round(np.linspace(0.0, 1.0, 41), 3):
        at_t = scope_report(gold, probs, label_names, float(t), fallback_tag, out_of_scope)
        scope["curve"].append(
            {
                "threshold": float(t),
                "topic_precision": at_t["topics"][Metric.AUTO_PRECISION],
                "topic_coverage": at_t["topics"][Metric.COVERAGE],
                "oos_auto_topic": at_t["out_of_scope"]["auto_topic"],
            }
        )
    return scope


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
    out_of_scope: np.ndarray | None = None,
) -> dict:
    """The full evaluation report for one model on one set of gold items.

    probs[i, k] is the probability of label_names[k] for items[i]. `threshold` is the review
    threshold to apply (chosen on validation data); when None, the threshold that reaches
    `precision_target` on *these* items is chosen and applied, which is right for the validation
    set and optimistic anywhere else. Either way the report also says which threshold this data
    alone would need (`coverage.threshold_for_target`). `out_of_scope` marks the items the
    out-of-scope gate stopped (`mltagger.models.rule.gate_mask`): the rule applies it wherever a
    threshold is applied, the curves of other thresholds included.
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

    own_threshold = choose_precision_threshold(conf, correct, precision_target, threshold_rule)
    chosen_on = "given" if threshold is not None else "this_data"
    if threshold is None:
        # Unreachable target: send everything to review rather than auto-tag below target.
        threshold = own_threshold if own_threshold is not None else float("inf")

    overall = _block(gold, probs, label_names, all_tags, threshold, fallback_tag, out_of_scope)
    per_class = overall.pop("per_class")
    at_threshold = overall.pop("at_threshold", None)

    scope = _scope_with_curve(items, gold, probs, label_names, threshold, fallback_tag,
                              out_of_scope) if gold else None  # fmt: skip

    names = list(slice_names) if slice_names is not None else list(slice_registry.REGISTRY)
    slices: dict[str, dict] = {}
    for name in names:
        mask = np.array(slice_registry.REGISTRY[name].mask(items), dtype=bool)
        n = int(mask.sum())
        if n == 0 and name in slice_registry.GOLD_SLICES:
            continue  # e.g. out_of_scope on data without out-of-scope items
        sub_gold = [g for g, m in zip(gold, mask, strict=True) if m]
        block = _block(
            sub_gold,
            probs[mask],
            label_names,
            all_tags,
            threshold,
            fallback_tag,
            None if out_of_scope is None else np.asarray(out_of_scope)[mask],
        )
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


def lowest_tag(report: dict) -> dict | None:
    """The tag whose automatic tags are right least often (among tags applied automatically at
    least once): the product promises precision per tag, so this is the promise as it stands.
    None when nothing was applied automatically."""
    auto = (report.get("coverage", {}).get("at_threshold") or {}).get("per_class_auto") or {}
    applied = [(t, v) for t, v in auto.items() if v.get("num_auto")]
    if not applied:
        return None
    tag, v = min(applied, key=lambda tv: (tv[1]["precision"], -tv[1]["num_auto"], tv[0]))
    low = (v.get("precision_ci95") or [None])[0]
    return {"tag": tag, "precision": v["precision"], "low": low, "num_auto": v["num_auto"]}


def summary_metrics(report: dict, prefix: str = "") -> dict[str, float]:
    """The headline numbers as flat `prefix/key` pairs (for W&B summaries, sweeps, tables)."""
    out = {k: v for k, v in report["overall"].items() if isinstance(v, int | float)}
    at = report["coverage"]["at_threshold"] or {}
    for key in (Metric.THRESHOLD, Metric.AUTO_PRECISION, Metric.COVERAGE):
        if isinstance(at.get(key), int | float):  # a per-tag threshold is reported per tag
            out[key] = at[key]
    if report["calibration"][Metric.ECE] is not None:
        out[Metric.ECE] = report["calibration"][Metric.ECE]
    worst = lowest_tag(report)
    if worst is not None:
        out[Metric.LOWEST_TAG_AUTO_PRECISION] = worst["precision"]
        if worst["low"] is not None:
            out[Metric.LOWEST_TAG_AUTO_PRECISION_LOW] = worst["low"]
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
        for key, src in (
            (Metric.OOS_AUTO_TOPIC_NOT_ML, "auto_topic_not_ml"),
            (Metric.OOS_AUTO_TOPIC_ML, "auto_topic_ml"),
        ):
            if scope["out_of_scope"].get(src) is not None:
                out[key] = scope["out_of_scope"][src]
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
    out_of_scope: np.ndarray | None = None,
) -> list[dict]:
    """One record per item for error analysis: gold, top class, applied tag, scores."""
    tags, conf, review = apply_threshold(probs, label_names, threshold, fallback_tag, out_of_scope)
    gated = np.zeros(len(items), dtype=bool) if out_of_scope is None else np.asarray(out_of_scope)
    return [
        {
            "id": it["id"],
            "text": it["text"],
            "gold": it.get("tag"),
            "predicted": label_names[int(np.argmax(p))],
            "tag": tag,
            "confidence": float(c),
            "needs_review": bool(r),
            "reason": reason(r, o),
            "scores": {t: round(float(x), 6) for t, x in zip(label_names, p, strict=True)},
        }
        for it, p, tag, c, r, o in zip(items, probs, tags, conf, review, gated, strict=True)
    ]
