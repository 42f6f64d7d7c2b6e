"""Evaluation reports as Markdown (what a run folder and its model card show): the headline,
per-tag table with Wilson intervals, operating points, scope (topic vs. out-of-scope) and the
side-by-side comparison of several models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from mltagger.evaluation import plots
from mltagger.evaluation.metrics import HEADLINE_ROWS, Metric, summary_metrics


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


def scope_md(scope: dict | None) -> list[str]:
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
        *scope_md(report.get("scope")),
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


def side_by_side(reports: dict[str, dict]) -> str:
    """Headline figures of several sets in one table (test beside fresh)."""

    flat = {name: summary_metrics(r) for name, r in reports.items()}
    rows = [*HEADLINE_ROWS, ("items", Metric.NUM_SAMPLES)]
    lines = ["| figure | " + " | ".join(flat) + " |", "|---|" + "---:|" * len(flat)]
    for label, key in rows:
        cells = []
        for m in flat.values():
            v = m.get(key)
            cells.append(
                "—" if v is None else (f"{v:.0f}" if key == Metric.NUM_SAMPLES else f"{v:.3f}")
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
