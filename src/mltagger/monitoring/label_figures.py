"""The figures of `mltagger simulate-labels`: the default order chosen on the first half, the
targets read on the second, the learning curves and the terminal tables.

Apart from the replay job so that a newcomer can read what is measured without the loading and
the learners around it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

TARGETS = {
    "labels_share_max": 0.60,  # of oldest-first's labels, to reach its final coverage
    "quarter_gain_min": 0.15,  # coverage, last quarter minus first quarter, best strategy
    "precision_min": 0.92,  # of the windows the gains are read on
    "window_precision_min": 0.90,  # every window
}


def labels_to_reach(rows: list[dict], coverage: float, precision: float) -> int | None:
    """Labels spent by the first window at or above `coverage` with precision >= `precision`."""
    for r in rows:
        if r["coverage"] >= coverage and r["precision"] >= precision:
            return int(r["labels"])
    return None


def quarters(rows: list[dict]) -> tuple[dict, dict]:
    """Coverage and precision over the first and the last quarter of the windows' items."""
    q = max(1, len(rows) // 4)

    def pooled(part: list[dict]) -> dict:
        n = sum(r["items"] for r in part)
        auto = sum(r["auto"] for r in part)
        right = sum(r["precision"] * r["auto"] for r in part if r["auto"])
        return {"coverage": auto / n, "precision": right / auto if auto else float("nan")}

    return pooled(rows[:q]), pooled(rows[-q:])


def choose_default(first: dict[str, list[list[dict]]]) -> tuple[str, bool]:
    """The first half's best strategy: the highest mean coverage over all windows and seeds
    among those whose every window in every seed kept precision >= 0.90 (True); when none did,
    the one whose worst window was best (False: no strategy met the floor)."""
    floor = TARGETS["window_precision_min"]

    def worst(runs: list[list[dict]]) -> float:
        return min((r["precision"] for rows in runs for r in rows if r["auto"]), default=1.0)

    ok = {
        s: float(np.mean([r["coverage"] for rows in runs for r in rows]))
        for s, runs in first.items()
        if worst(runs) >= floor
    }
    if ok:
        return max(sorted(ok), key=ok.__getitem__), True
    return max(sorted(first), key=lambda s: worst(first[s])), False


def read_targets(second: dict[str, list[list[dict]]], best: str) -> dict[str, Any]:
    """The targets on the second half (mean over seeds where a figure is per seed)."""
    old_final = [rows[-1] for rows in second["oldest"]]
    need, share = [], []
    for rows, base in zip(second[best], old_final, strict=True):
        n = labels_to_reach(rows, base["coverage"], TARGETS["precision_min"])
        need.append(n)
        share.append(None if n is None or not base["labels"] else n / base["labels"])
    every = {
        s: [
            labels_to_reach(rows, base["coverage"], TARGETS["precision_min"])
            for rows, base in zip(runs, old_final, strict=True)
        ]
        for s, runs in second.items()
    }
    gains, precs = [], []
    for rows in second[best]:
        first_q, last_q = quarters(rows)
        gains.append(last_q["coverage"] - first_q["coverage"])
        precs.append(last_q["precision"])
    worst = min(
        (r["precision"] for rows in second[best] for r in rows if r["auto"]), default=float("nan")
    )
    shares = [s for s in share if s is not None]
    return {
        "best": best,
        "oldest_final_coverage": [r["coverage"] for r in old_final],
        "oldest_labels": [r["labels"] for r in old_final],
        "best_labels_to_reach": need,
        "labels_to_reach_by_strategy": every,
        "labels_share": share,
        "labels_share_met": len(shares) == len(share)
        and max(shares) <= TARGETS["labels_share_max"],
        "quarter_gain": gains,
        "last_quarter_precision": precs,
        "quarter_gain_met": min(gains) >= TARGETS["quarter_gain_min"]
        and min(precs) >= TARGETS["precision_min"],
        "worst_window_precision": worst,
        "window_precision_met": worst >= TARGETS["window_precision_min"],
    }


def curves_plot(half: dict[str, list[list[dict]]], path: Path, title: str) -> None:
    """Coverage per window against labels spent, mean +- std over seeds, one line a strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for strategy, runs in half.items():
        n = min(len(rows) for rows in runs)
        cov = np.array([[r["coverage"] for r in rows[:n]] for rows in runs])
        labels = np.array([[r["labels"] for r in rows[:n]] for rows in runs]).mean(axis=0)
        ax.plot(labels, cov.mean(axis=0), label=strategy)
        ax.fill_between(labels, cov.mean(0) - cov.std(0), cov.mean(0) + cov.std(0), alpha=0.15)
    ax.set_xlabel("labels spent")
    ax.set_ylabel("auto-tag coverage per window of 100 items")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_half(half: dict[str, list[list[dict]]], best: str, meets_floor: bool) -> str:
    """One half's per-strategy figures: mean coverage, precision of all auto-tags, worst
    window (means over seeds)."""
    lines = [f"chosen: {best} (every window >= 0.90: {'yes' if meets_floor else 'no'})"]
    for strategy, runs in half.items():
        cov = np.mean([r["coverage"] for rows in runs for r in rows])
        auto = sum(r["auto"] for rows in runs for r in rows)
        right = sum(r["precision"] * r["auto"] for rows in runs for r in rows if r["auto"])
        worst = min((r["precision"] for rows in runs for r in rows if r["auto"]), default=np.nan)
        lines.append(
            f"{strategy:16s} coverage {cov:.3f}  precision {right / max(auto, 1):.3f}  "
            f"worst window {worst:.3f}  last window cov "
            f"{np.mean([rows[-1]['coverage'] for rows in runs]):.3f}"
        )
    return "\n".join(lines)


def format_result(result: dict) -> str:
    """The per-strategy table on the second half and the targets, for the terminal."""
    t = result["targets"]
    lines = [f"default order chosen on the first half: {result['chosen_on_first_half']}", ""]
    lines.append(
        f"{'strategy':16s} {'final cov':>10s} {'labels':>7s} {'cov/100 labels':>15s} "
        f"{'labels to oldest-first final cov (per seed)':>44s}"
    )
    for strategy, runs in result["second"].items():
        final = np.mean([rows[-1]["coverage"] for rows in runs])
        start = np.mean([rows[0]["coverage"] for rows in runs])
        spent = np.mean([rows[-1]["labels"] for rows in runs])
        per100 = 100 * (final - start) / spent if spent else float("nan")
        reach = t["labels_to_reach_by_strategy"][strategy]
        lines.append(
            f"{strategy:16s} {final:10.3f} {spent:7.0f} {100 * per100:14.2f}pt {reach!s:>44s}"
        )
    lines += [
        "",
        f"labels to reach oldest-first's final coverage: {t['best_labels_to_reach']} "
        f"(share {t['labels_share']}; target <= 0.60: "
        f"{'met' if t['labels_share_met'] else 'missed'})",
        f"coverage gain, last quarter vs first: {[round(g, 3) for g in t['quarter_gain']]} at "
        f"precision {[round(p, 3) for p in t['last_quarter_precision']]} (target >= 0.15 at "
        f">= 0.92: {'met' if t['quarter_gain_met'] else 'missed'})",
        f"worst window precision: {t['worst_window_precision']:.3f} (target >= 0.90: "
        f"{'met' if t['window_precision_met'] else 'missed'})",
    ]
    return "\n".join(lines)
