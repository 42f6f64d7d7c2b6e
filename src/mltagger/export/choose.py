"""Which export ships, and the table it is chosen from (the Pareto front of quality and speed).

The rule is decided on val alone, so that test and the fresh set stay honest reports of the
choice (a rule tuned until a test number looks good would overstate what ships):

1. weighted F1 on val within `max_val_f1_drop` of the fp32 export's;
2. top-class agreement with the fp32 export on val of at least `min_val_agreement`;
3. answers the same alone or micro-batched: largest probability difference between scoring a
   text alone and in a padded batch at most `max_batch_diff` (the service batches requests);
4. parity with torch above the export's bound (otherwise the candidate is not shippable at all);

and among the candidates that pass, the fastest single-item p50 ships. fp32 passes by
definition, so something always ships. Test and fresh are reported beside it as differences in
weighted F1 from fp32 with paired bootstrap intervals (`paired_weighted_f1`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mltagger.evaluation.metric_names import Metric
from mltagger.evaluation.paired import paired_weighted_f1

F1 = Metric.F1_WEIGHTED


@dataclass(frozen=True)
class ShipRule:
    """conf/export.yaml `ship_rule`."""

    max_val_f1_drop: float = 0.005
    min_val_agreement: float = 0.99
    max_batch_diff: float = 1e-4


def failed_checks(row: dict, reference: dict, rule: ShipRule) -> list[str]:
    """Why a candidate may not ship (empty: it may)."""
    why = []
    drop = reference["summary"]["val/" + F1] - row["summary"]["val/" + F1]
    if drop > rule.max_val_f1_drop + 1e-12:
        why.append(f"val weighted F1 {drop:.4f} below fp32 (bound {rule.max_val_f1_drop})")
    if row["val_agreement"] < rule.min_val_agreement:
        why.append(f"val agreement with fp32 {row['val_agreement']:.4f} < {rule.min_val_agreement}")
    if row["batch_diff"] > rule.max_batch_diff:
        why.append(f"batched differs by {row['batch_diff']:.1e} > {rule.max_batch_diff:.0e}")
    if not row.get("parity_ok", True):
        why.append("parity with torch below the bound")
    return why


def choose_fastest(rows: dict[str, dict], reference: str, rule: ShipRule) -> str:
    """The fastest (single-item p50) export that passes the rule; records each row's verdict in
    `row["why_not"]` (empty when it may ship)."""
    ref = rows[reference]
    for row in rows.values():
        row["why_not"] = failed_checks(row, ref, rule)
    ok = [name for name, row in rows.items() if not row["why_not"]]
    return min(ok, key=lambda n: rows[n]["speed"]["p50_ms"])


def quality_intervals(
    gold: dict[str, list[str]], probs: dict[str, dict[str, np.ndarray]], labels: list[str], ref: str
) -> dict[str, dict[str, dict]]:
    """Per candidate and split (test, fresh): weighted F1 of its top answers minus fp32's, with
    a paired bootstrap interval (same items, same resamples)."""
    out: dict[str, dict[str, dict]] = {}
    names = np.asarray(labels, dtype=object)
    for name, by_split in probs.items():
        for split, p in by_split.items():
            if split not in gold or not len(gold[split]):
                continue
            a = names[probs[ref][split].argmax(1)]
            b = names[p.argmax(1)]
            out.setdefault(name, {})[split] = paired_weighted_f1(gold[split], a, b)
    return out


def _f(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _delta(iv: dict | None) -> str:
    if iv is None:
        return "—"
    return f"{iv['diff']:+.3f} [{iv['low']:+.3f}, {iv['high']:+.3f}]"


def pareto_table(rows: dict[str, dict], intervals: dict, ship: str) -> str:
    """One row per export: what it keeps of fp32's quality (val, test, fresh), what it gains in
    speed and size, and whether the rule lets it ship."""
    lines = [
        "| export | val wF1 | val agreement | test ΔwF1 [95% CI] | fresh ΔwF1 [95% CI] "
        "| test coverage / precision | fresh coverage / precision | batched Δp | p50 ms "
        "| p99 ms | items/s (batch 32) | size MB | may ship |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["speed"]["p50_ms"]):
        s, sp, iv = r["summary"], r["speed"], intervals.get(name, {})
        verdict = "**shipped**" if name == ship else ("yes" if not r["why_not"] else "no: ")
        verdict += "; ".join(r["why_not"])
        lines.append(
            f"| {name} | {_f(s.get('val/' + F1))} | {_f(r['val_agreement'], 4)} "
            f"| {_delta(iv.get('test'))} | {_delta(iv.get('fresh'))} "
            f"| {_f(s.get('test/' + Metric.COVERAGE))} / "
            f"{_f(s.get('test/' + Metric.AUTO_PRECISION))} "
            f"| {_f(s.get('fresh/' + Metric.COVERAGE))} / "
            f"{_f(s.get('fresh/' + Metric.AUTO_PRECISION))} "
            f"| {r['batch_diff']:.1e} | {sp['p50_ms']:.2f} | {sp['p99_ms']:.2f} "
            f"| {sp['throughput_batch32_per_s']:.0f} | {r['size_mb']:.1f} | {verdict} |"
        )
    return "\n".join(lines)
