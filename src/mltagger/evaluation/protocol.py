"""The val -> test protocol every model goes through: the review threshold and the per-tag
operating points are chosen on validation predictions only, then applied unchanged to test (and
fresh), and both reports are written side by side.

Separate from `metrics` because it decides *where* numbers may be chosen; `metrics` only counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mltagger.data import slices as slice_registry
from mltagger.evaluation.markdown import write_report
from mltagger.evaluation.metrics import (
    Metric,
    coverage_curve,
    evaluate_predictions,
    predictions_records,
    scope_report,
)
from mltagger.evaluation.thresholds import choose_precision_threshold


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
    out_of_scope: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict, dict, float]:
    """The protocol every model follows: choose the review threshold on val, apply it to test.

    A given `threshold` (e.g. the one a shipped model folder carries) is applied to both instead.

    Returns (val_report, test_report, applied threshold; inf when the target is unreachable,
    i.e. everything goes to review). With out_dir, writes both reports and their predictions.
    `out_of_scope`: the (val, test) items the rule's out-of-scope gate stops.
    """
    kw = eval_kwargs(data, eval_cfg, labels)
    val_items = data.splits["val"][: len(val_probs)]
    test_items = data.splits["test"][: len(test_probs)]
    val_out, test_out = (
        (out_of_scope[0][: len(val_probs)], out_of_scope[1][: len(test_probs)])
        if out_of_scope is not None
        else (None, None)
    )
    val_report = evaluate_predictions(
        val_items, val_probs, labels, threshold=threshold, out_of_scope=val_out, **kw
    )
    if threshold is None:
        threshold = val_report["coverage"]["threshold"]
    applied = threshold if threshold is not None else float("inf")
    test_report = evaluate_predictions(
        test_items, test_probs, labels, threshold=applied, out_of_scope=test_out, **kw
    )
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
        for split, report, items, probs, out in (
            ("val", val_report, val_items, val_probs, val_out),
            ("test", test_report, test_items, test_probs, test_out),
        ):
            name = "validation" if split == "val" else split
            write_report(
                report,
                Path(out_dir) / split,
                f"{title} — {name}",
                predictions_records(items, probs, labels, applied, data.fallback_tag, out),
            )
    return val_report, test_report, applied


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
        t = choose_precision_threshold(vc, vk, float(target), rule)
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
