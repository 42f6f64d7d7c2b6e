"""The export report (`export_report.md`): the Pareto front of speed and quality with the rule
that chose, the int8 sensitivity of each block, every candidate's quality under its decision
rule (test and fresh), the per-tag thresholds re-checked on val, parity and size."""

from __future__ import annotations

from mltagger.evaluation.markdown import comparison_table
from mltagger.export.choose import ShipRule, pareto_table
from mltagger.export.quantize import most_sensitive


def sensitivity_lines(results: dict, top: int = 8) -> list[str]:
    """The int8 sensitivity of each unit (measured on val), when a keep variant ran: per block
    for dynamic int8, per MatMul for static (the `top` most damaging)."""
    lines = []
    for name, r in results.items():
        for kind, sens in (r.get("int8_sensitivity") or {}).items():
            lines += [
                f"Units of **{name}** quantised alone ({kind} int8, val), most damaging first: "
                "`int8-keep<k>` / `int8-static-keep<k>` leave the first k in fp32.",
                "",
                "| unit | mean abs probability change | top class changed | nodes |",
                "|---|---:|---:|---:|",
            ]
            for unit in most_sensitive(sens, top):
                u = sens[unit]
                lines.append(
                    f"| `{unit}` | {u['mean_abs_diff']:.2e} | {u['flips']:.4f} | {u['nodes']} |"
                )
            lines.append("")
    return lines


def render(
    results: dict, reports: dict, ship: str, f1_bound: dict, intervals: dict, rule: ShipRule
) -> str:
    """The export report: speed and quality of every export (the Pareto front, with the rule
    that chose), the full quality table of every candidate, then parity and size."""
    exports = {n: r for n, r in results.items() if "speed" in r}
    lines = [
        "# Export candidates",
        "",
        f"Chosen on val: weighted F1 within {rule.max_val_f1_drop} of teacher-fp32, top-class "
        f"agreement with it >= {rule.min_val_agreement}, the same answers alone or batched "
        f"(largest difference <= {rule.max_batch_diff:.0e}); the fastest p50 of those ships. "
        "Test and fresh: weighted F1 minus teacher-fp32's, paired bootstrap 95% intervals. "
        "Latency: one item per call, this process, one after another.",
        "",
        pareto_table(exports, intervals, ship),
        "",
        *sensitivity_lines(results),
        "## Quality under each folder's decision rule (test split)",
        "",
        comparison_table(reports),
        "",
    ]
    fresh = {n: r["fresh_report"] for n, r in results.items() if r.get("fresh_report")}
    if fresh:
        lines += ["## Fresh 2023–2026 set, same rules", "", comparison_table(fresh), ""]
    for name, r in results.items():
        if not r.get("recheck"):
            continue
        lines += [
            f"Per-tag thresholds of **{name}** re-checked on val:",
            "",
            "| tag | shipped | its own val choice | val auto-tagged | val precision at shipped "
            "| differs |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for tag, c in r["recheck"].items():
            prec = "—" if c["val_precision"] is None else f"{c['val_precision']:.3f}"
            lines.append(
                f"| {tag} | {c['shipped']:.3f} | {c['own_val']:.3f} | {c['val_auto']} | {prec} | "
                f"{'**yes**' if c['differs'] else 'no'} |"
            )
        lines.append("")
    lines += [
        "| candidate | size (MB) | label agreement with torch | max probability difference |",
        "|---|---:|---:|---:|",
    ]
    for name, r in results.items():
        p = r.get("parity")
        lines.append(
            f"| {name} | {r['size_mb']:.1f} | "
            + (f"{p['label_agreement']:.4f} | {p['max_prob_diff']:.2e} |" if p else "— | — |")
        )
    lines += [
        "",
        f"Shipped: **{ship}** (`models/export`). Test weighted F1 {f1_bound['shipped']:.3f} vs "
        f"teacher (torch, fp32) {f1_bound['teacher']:.3f}: "
        + (
            "within the bound."
            if f1_bound["ok"]
            else f"**{f1_bound['teacher'] - f1_bound['shipped']:.3f} below, over the "
            f"{f1_bound['max_drop']:.3f} bound.**"
        ),
        "",
        "Latency: `make bench`.",
        "",
    ]
    return "\n".join(lines)
