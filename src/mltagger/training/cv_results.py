"""What a cross-validation run concludes: out-of-fold arrays, the cross-fitted operating points
(each fold's thresholds chosen on the other folds), mean ± std of every headline figure, the
calibration comparison, and the Markdown summary.

Apart from `cv` (which runs the folds) so the numbers can be recomputed from a finished run's
files without training anything (docs/studies/ablation.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mltagger.evaluation.metrics import Metric, calibration, scope_report
from mltagger.evaluation.thresholds import choose_tag_thresholds
from mltagger.models.rule import apply_threshold, softmax
from mltagger.training.calibrate import fit_temperature, fit_vector_scaling

# The headline figures a CV summary reports (keys of the fold runs' flat metrics, without split).
HEADLINE = (
    Metric.F1_WEIGHTED,
    Metric.TOPIC_F1_WEIGHTED,
    Metric.AUTO_PRECISION,
    Metric.COVERAGE,
    Metric.TOPIC_AUTO_PRECISION,
    Metric.TOPIC_COVERAGE,
    Metric.OOS_AUTO_TOPIC,
    Metric.ECE,
)


def mean_std(values: Sequence[float]) -> dict:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "n": len(v),
    }


def summarise(cfg, labels, base, oof, fold_metrics, calib, seconds, fingerprint) -> dict:
    ecfg = cfg.eval
    target = float(ecfg.get("tag_precision_target", ecfg.precision_target))
    rule = str(ecfg.get("tag_rule", "pooled"))
    strength = float(ecfg.get("prior_strength", 20.0))
    gold, probs = oof_arrays(oof, labels)
    chosen = choose_tag_thresholds(probs, gold, labels, target, rule=rule, prior_strength=strength)
    per_fold_global = {
        key: mean_std([m.get(f"test/{key}") for m in fold_metrics]) for key in HEADLINE
    }
    crossed = cross_fitted_rule(oof, labels, base.fallback_tag, target, rule, strength)
    keys = sorted({k for row in crossed for k in row})
    per_fold_tag = {k: mean_std([row.get(k) for row in crossed]) for k in keys}
    return {
        "fingerprint": fingerprint,
        "data_sha256": base.data_sha256,
        "labels": labels,
        "folds": int(cfg.cv.folds),
        "seeds": [int(s) for s in cfg.cv.seeds],
        "overrides": list(cfg.get("cv_overrides") or []),
        "seconds": seconds,
        "num_oof": len(oof),
        "oof_counts": dict(sorted(Counter(gold).items())),
        "global_rule": per_fold_global,
        "per_tag_rule": per_fold_tag,
        "epochs": mean_std([m.get("best_epoch") for m in fold_metrics]),
        "calibration": {
            key: mean_std([c.get(key) for c in calib])
            for key in sorted({k for c in calib for k in c})
        },
        "operating_points": {
            **chosen,
            "fingerprint": fingerprint,
            "data_sha256": base.data_sha256,
            "labels": labels,
            "fallback_tag": base.fallback_tag,
            "chosen_on": f"{len(oof)} out-of-fold predictions ({cfg.cv.folds} folds, "
            f"seeds {list(cfg.cv.seeds)})",
        },
        "per_fold": [
            {k: v for k, v in m.items() if isinstance(v, int | float)} for m in fold_metrics
        ],
    }


def calibration_comparison(fold_dir: Path) -> dict:
    """Held-out NLL and ECE with one temperature and with vector scaling, both fitted on the
    fold's inner val logits (what training saves in logits.npz)."""

    z = np.load(fold_dir / "logits.npz")
    vl, vy, tl, ty = z["val_logits"], z["val_labels"], z["test_logits"], z["test_labels"]
    out = {}
    temp = fit_temperature(vl, vy)
    w, b = fit_vector_scaling(vl, vy)
    for name, p in (
        ("uncalibrated", softmax(tl)),
        ("temperature", softmax(tl, temp)),
        ("vector", softmax(tl * w + b)),
    ):
        nll = float(-np.mean(np.log(np.clip(p[np.arange(len(ty)), ty], 1e-12, None))))
        correct = (p.argmax(1) == ty).astype(float)
        out[f"{name}_nll"] = nll
        out[f"{name}_ece"] = float(calibration(p.max(1), correct)[Metric.ECE])
    return out


def _ms(d: dict | None, pct: bool = False) -> str:
    if not d or d.get("mean") is None:
        return "—"
    if pct:
        return f"{100 * d['mean']:.1f} ± {100 * d['std']:.1f}%"
    return f"{d['mean']:.3f} ± {d['std']:.3f}"


def render_summary(s: dict) -> str:
    g, t = s["global_rule"], s["per_tag_rule"]
    lines = [
        f"# Cross-validation: {s['folds']} folds × seeds {s['seeds']} "
        f"({s['num_oof']} out-of-fold predictions, {s['seconds'] / 60:.1f} min)",
        "",
        f"Overrides: `{' '.join(s['overrides']) or '(defaults)'}`. Best epoch {_ms(s['epochs'])}.",
        "",
        "| figure (mean ± std over folds) | held-out, global threshold (from inner val) "
        "| held-out, per-tag thresholds (from other folds' OOF) |",
        "|---|---:|---:|",
    ]
    names = {
        Metric.F1_WEIGHTED: "weighted F1",
        Metric.TOPIC_F1_WEIGHTED: "topic weighted F1",
        Metric.AUTO_PRECISION: "auto-tag precision (all tags)",
        Metric.COVERAGE: "coverage (all items)",
        Metric.TOPIC_AUTO_PRECISION: "topic auto-tag precision",
        Metric.TOPIC_COVERAGE: "topic coverage",
        "topic_lost_to_other": "topic items auto-tagged `other`",
        Metric.OOS_AUTO_TOPIC: "out-of-scope auto-tagged with a topic",
        Metric.ECE: "ECE",
    }
    for key, name in names.items():
        pct = key not in (Metric.F1_WEIGHTED, Metric.TOPIC_F1_WEIGHTED, Metric.ECE)
        lines.append(f"| {name} | {_ms(g.get(key), pct)} | {_ms(t.get(key), pct)} |")
    if s.get("heldout"):
        h = s["heldout"]
        sets = list(h)
        lines += [
            "",
            "## Test and fresh, scored by each fold model under the per-tag thresholds above "
            "(reported, never chosen on)",
            "",
            "| figure (mean ± std over fold models) | " + " | ".join(sets) + " |",
            "|---|" + "---:|" * len(sets),
        ]
        for key, name in names.items():
            if any(key in h[x] for x in sets):
                pct = key not in (Metric.F1_WEIGHTED, Metric.TOPIC_F1_WEIGHTED, Metric.ECE)
                cells = " | ".join(_ms(h[x].get(key), pct) for x in sets)
                lines.append(f"| {name} | {cells} |")
    op = s["operating_points"]
    lines += [
        "",
        f"## Per-tag thresholds ({op['rule']} rule, target {op['precision_target']:.2f}; "
        f"prior: all tags at the same threshold, strength {op['prior']['strength']:.0f})",
        "",
        "| tag | OOF predicted | threshold | auto-tagged | precision | own 95% lower "
        "| pooled 95% lower |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for tag, r in op["per_tag"].items():

        def f3(x):
            return "—" if x is None else f"{x:.3f}"

        lines.append(
            f"| {tag} | {r['num_predicted']} | {f3(r['threshold'])} | {r['num_auto']} | "
            f"{f3(r['precision'])} | {f3(r['own_lower'])} | {f3(r['pooled_lower'])} |"
        )
    c = s["calibration"]
    if c:
        lines += [
            "",
            "## Calibration on held-out folds (fitted on each fold's inner val)",
            "",
            "| method | NLL | ECE |",
            "|---|---:|---:|",
        ]
        for m in ("uncalibrated", "temperature", "vector"):
            lines.append(f"| {m} | {_ms(c.get(f'{m}_nll'))} | {_ms(c.get(f'{m}_ece'))} |")
    return "\n".join(lines) + "\n"


def oof_arrays(oof: Sequence[dict], labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    return [r["gold"] for r in oof], np.array(
        [[r["scores"][t] for t in labels] for r in oof], dtype=float
    )


def cross_fitted_rule(
    oof: Sequence[dict], labels, fallback: str, target: float, rule: str, strength: float
) -> list[dict]:
    """Per-tag thresholds judged honestly: chosen on the other folds' OOF, applied to this one."""
    out = []
    keys = sorted({(r["seed"], r["fold"]) for r in oof})
    for seed, fold in keys:
        fit = [r for r in oof if r["seed"] == seed and r["fold"] != fold]
        held = [r for r in oof if r["seed"] == seed and r["fold"] == fold]
        g_fit, p_fit = oof_arrays(fit, labels)
        chosen = choose_tag_thresholds(
            p_fit, g_fit, labels, target, rule=rule, prior_strength=strength
        )
        g, p = oof_arrays(held, labels)
        out.append(decision_figures(g, p, labels, chosen["thresholds"], fallback))
    return out


def decision_figures(gold: Sequence[str], probs: np.ndarray, labels, threshold, fallback) -> dict:
    """Headline figures of one decision rule on held-out items (no threshold chosen here)."""
    tags, _, review = apply_threshold(probs, labels, threshold, fallback)
    auto = ~review
    right = np.array([t == g for t, g in zip(tags, gold, strict=True)])
    out = {
        Metric.AUTO_PRECISION: float(right[auto].mean()) if auto.any() else None,
        Metric.COVERAGE: float(auto.mean()),
    }
    scope = scope_report(gold, probs, labels, threshold, fallback)
    if scope:
        out[Metric.TOPIC_AUTO_PRECISION] = scope["topics"][Metric.AUTO_PRECISION]
        out[Metric.TOPIC_COVERAGE] = scope["topics"][Metric.COVERAGE]
        out["topic_lost_to_other"] = scope["topics"]["lost_to_other"]
        out[Metric.OOS_AUTO_TOPIC] = scope["out_of_scope"]["auto_topic"]
    return out
