"""The model card (README.md of every model folder): what the model is, the data it saw, the
shipped decision rule and its measured precision and coverage, the fresh-set figures, and the
limits a user should know before trusting it.
"""

from __future__ import annotations

from mltagger.data.prepare import PreparedData
from mltagger.evaluation.markdown import fmt, per_class_table, scope_md
from mltagger.evaluation.metrics import HEADLINE_ROWS, Metric, lowest_tag
from mltagger.models.rule import PROMISE
from mltagger.training.checkpoints import TrainState


def _gate_text(decision: dict) -> str:
    """The gate part of the rule in words: its threshold, or why there is none."""
    if decision.get("gate_threshold") is not None:
        return f"at {decision['gate_threshold']:.2f}"
    return decision.get("gate_why", "none")


def headline(name: str, metrics: dict, decision: dict) -> str:
    """The lines `make train` ends with: test and fresh side by side, per-tag and global rule."""

    def f(key: str) -> str:
        v = metrics.get(key)
        return "  —  " if v is None else f"{v:.3f}"

    rows = HEADLINE_ROWS
    lines = [
        f"\n{name}: decision rule {decision['rule_used']} ({decision['why']}); out-of-scope "
        f"gate {_gate_text(decision)}",
        f"  {'':40s} {'test':>7s} {'fresh':>7s}   (global val threshold: test  fresh)",
    ]
    for label, key in rows:
        lines.append(
            f"  {label:40s} {f('test/' + key):>7s} {f('fresh/' + key):>7s}"
            f"   {f('test_global/' + key):>27s} {f('fresh_global/' + key):>6s}"
        )
    return "\n".join(lines)


def _tag_numbers(report: dict | None, tag: str) -> dict:
    """The tag's figures on one report: coverage of its items, precision of its automatic tags,
    how many, and that precision's Wilson lower bound (None where there are none)."""
    if report is None:
        return {"coverage": None, "precision": None, "num_auto": 0, "lower": None}
    at = report["coverage"].get("at_threshold") or {}
    auto = (at.get("per_class_auto") or {}).get(tag) or {}
    n = auto.get("num_auto") or 0
    return {
        "coverage": (at.get("per_class_coverage") or {}).get(tag),
        "precision": auto.get("precision") if n else None,
        "num_auto": n,
        "lower": (auto.get("precision_ci95") or [None])[0] if n else None,
    }


def per_tag_rows(decision: dict, test: dict, fresh: dict | None) -> list[dict]:
    """Each tag's operating point on old and new data: its threshold, the out-of-fold figures
    it was chosen on (CV), and its figures on test and fresh (`_tag_numbers`). Written to the
    model folder as per_tag.json, so the health page shows the promise the serving model made."""
    detail = decision.get("per_tag_detail") or {}
    thresholds = decision.get("thresholds")
    rows = []
    for tag in list((test.get("per_class") or {}).keys()) or list(detail):
        d = detail.get(tag) or {}
        thr = thresholds.get(tag) if isinstance(thresholds, dict) else None
        rows.append(
            {
                "tag": tag,
                "threshold": thr if thr is not None else (test["coverage"].get("threshold")),
                "cv": {
                    "precision": d.get("precision"),
                    "num_auto": d.get("num_auto", 0),
                    "lower": d.get("pooled_lower", d.get("own_lower")),
                }
                if d
                else None,
                "test": _tag_numbers(test, tag),
                "fresh": _tag_numbers(fresh, tag) if fresh is not None else None,
            }
        )
    return rows


def _cells(fig: dict | None) -> str:
    if fig is None:
        return "— | — | —"
    prec = f"{fmt(fig['precision'])} ({fig['num_auto']})" if fig["num_auto"] else "—"
    return f"{fmt(fig['coverage'])} | {prec} | {fmt(fig['lower'])}"


def per_tag_points(decision: dict, test: dict, fresh: dict | None) -> list[str]:
    """Each tag's operating point on old and new data side by side (markdown): its threshold,
    the out-of-fold figures it was chosen on (CV), and on test and fresh the share of the tag's
    items tagged automatically, the precision of its automatic tags (how many) and the lower
    bound of that precision. The promise is per tag, so this table is where it is kept or not."""
    lines = [
        "| tag | threshold | CV precision (auto) | CV lower bound | test coverage | test precision "
        "| test lower | fresh coverage | fresh precision | fresh lower |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in per_tag_rows(decision, test, fresh):
        cv = row["cv"]
        cv_cells = f"{fmt(cv['precision'])} ({cv['num_auto']})" if cv else "—"
        lines.append(
            f"| {row['tag']} | {fmt(row['threshold'])} | {cv_cells} | "
            f"{fmt(cv['lower']) if cv else '—'} | {_cells(row['test'])} | {_cells(row['fresh'])} |"
        )
    return lines


def model_card(
    cfg,
    data: PreparedData,
    labels,
    val_report,
    test_report,
    temperature,
    state: TrainState,
    fresh_report: dict | None = None,
    decision: dict | None = None,
) -> str:
    """A short model card: what it was trained on, how well it does per tag and slice, limits."""

    at = test_report["coverage"]["at_threshold"] or {}
    weak = sorted(
        ((n, s) for n, s in test_report["slices"].items() if s.get(Metric.ACCURACY) is not None),
        key=lambda x: x[1][Metric.ACCURACY],
    )[:3]
    weak_lines = [
        f"- `{n}` (n={s[Metric.NUM_SAMPLES]}{', noisy' if s['noisy'] else ''}): "
        f"accuracy {s[Metric.ACCURACY]:.3f}"
        for n, s in weak
    ]
    counts = data.manifest()["counts"]
    sources = ", ".join(f"`{src['path']}`" for src in data.sources)
    return "\n".join(
        [
            f"# mltagger model: {cfg.model.name}",
            "",
            f"Fine-tuned from `{cfg.model.name_or_path}` for {state.best_epoch} epochs (best of "
            f"{state.epoch}) on {sources} "
            f"(data sha256 `{data.data_sha256}`)"
            + (
                f"; suspect weak labels: {data.label_noise['action']} "
                f"({data.label_noise['affected']} train rows)."
                if data.label_noise
                else "."
            ),
            f"Classes: {', '.join(labels)}. Answers are always one of: {', '.join(data.tags)}.",
            "",
            "## Intended use",
            "",
            "Tag machine-learning content (title + description) on the platform. Items whose "
            "calibrated confidence is below "
            + (
                "their predicted tag's threshold ("
                + ", ".join(
                    f"{t}: {v:.3f}" for t, v in test_report["coverage"]["threshold"].items()
                )
                + "; chosen per tag on out-of-fold predictions)"
                if isinstance(test_report["coverage"]["threshold"], dict)
                else fmt(at.get(Metric.THRESHOLD))
            )
            + " get "
            f"`{data.fallback_tag}` with needs_review and go to a person"
            + (
                "."
                if test_report["coverage"]["threshold"] is not None
                else " (the precision target was not reachable on val: every item goes to review)."
            ),
            "",
            "## Test figures",
            "",
            f"{test_report[Metric.NUM_SAMPLES]} test items. Weighted F1 "
            f"{test_report['overall'][Metric.F1_WEIGHTED]:.3f}; at the review threshold (chosen on "
            f"val for precision {cfg.eval.precision_target}): auto-tag precision "
            f"{fmt(at.get(Metric.AUTO_PRECISION))}, coverage {fmt(at.get(Metric.COVERAGE))}."
            f" Temperature {temperature:.3f}; ECE {test_report['calibration'][Metric.ECE]:.3f}.",
            "",
            per_class_table(test_report),
            "",
            *scope_md(test_report.get("scope")),
            "Weakest slices:",
            *weak_lines,
            "",
            *_fresh_card(fresh_report),
            "## Each tag's operating point: cross-validation, test and fresh",
            "",
            "Coverage: the share of the tag's items tagged automatically; precision: of the "
            "tag's automatic tags (how many); lower: the 95% lower bound of that precision.",
            "",
            *per_tag_points(decision or {}, test_report, fresh_report),
            "",
            "## Limits",
            "",
            f"- Trained on {sum(counts['train'].values())} items; small tags have few test items "
            f"({', '.join(f'{t}: {n}' for t, n in counts['test'].items())}), so their figures are "
            "noisy.",
            "- English text only."
            + (
                " Out-of-scope content is a trained class (`other`); the table above says how "
                "often it still gets a topic."
                if "other" in labels
                else " Content outside the trained classes is answered with the closest class "
                "unless its confidence falls below the threshold."
            ),
            "",
        ]
    )


def _fresh_card(report: dict | None) -> list[str]:
    """The model card's fresh-set section: 2023-2026 content the training data never had."""

    if report is None:
        return []
    at = report["coverage"]["at_threshold"] or {}
    worst = lowest_tag(report)
    promise = (
        "Nothing was tagged automatically."
        if worst is None
        else f"**The promise on current content** (precision > {PROMISE:.0%} for every tag applied "
        f"automatically): the lowest is {worst['tag']}, right {fmt(worst['precision'])} of "
        f"{worst['num_auto']} times (95% interval from {fmt(worst['low'])}): "
        f"{'kept' if worst['precision'] > PROMISE else '**broken**'}."
    )
    return [
        "## Fresh figures (2023–2026 items, never trained on)",
        "",
        f"{report[Metric.NUM_SAMPLES]} items ({report.get('fresh', {}).get('path', '')}). "
        f"Weighted F1 {fmt(report['overall'].get(Metric.F1_WEIGHTED))}; auto-tag precision "
        f"{fmt(at.get(Metric.AUTO_PRECISION))} at coverage {fmt(at.get(Metric.COVERAGE))}.",
        "",
        promise,
        "",
        per_class_table(report),
        "",
        *scope_md(report.get("scope")),
    ]
