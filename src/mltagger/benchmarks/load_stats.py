"""What a locust run measured, read back from its CSV stats, and the table `mltagger load-test`
prints: requests/s, items/s, p50/p95/p99 latency and failures per scenario and worker count.

Apart from `load` so that the arithmetic (items/s from requests/s, ratios to one worker) is
tested on written CSV files without starting a service or locust.
"""

from __future__ import annotations

import csv
from pathlib import Path


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:  # locust writes N/A for a percentile of no requests
        return None


def read_stats(path: Path, batch: int) -> dict:
    """The Aggregated row of a locust `_stats.csv` (each run has one request type).

    Latencies are locust's, kept to two significant digits (147 ms is 150, 3432 ms is 3400).
    """
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Name"] == "Aggregated"]
    if not rows:
        raise RuntimeError(f"{path} has no Aggregated row")
    row = rows[0]
    requests, failures = int(row["Request Count"]), int(row["Failure Count"])
    rps = _number(row["Requests/s"]) or 0.0
    ok_share = (requests - failures) / requests if requests else 0.0
    return {
        "batch": batch,
        "requests": requests,
        "failures": failures,
        "requests_per_s": rps,
        # answered items per second: failed requests tag nothing
        "items_per_s": rps * ok_share * batch,
        "p50_ms": _number(row["50%"]),
        "p95_ms": _number(row["95%"]),
        "p99_ms": _number(row["99%"]),
        "max_ms": _number(row["Max Response Time"]),
    }


def _series(r: dict) -> str:
    """What a row measures apart from the worker count: scenario, users, batching."""
    batching = f", batching {r['batching']}" if r.get("batching") else ""
    return f"{r['scenario']} ({r['users']} users{batching})"


def worker_ratios(rows: list[dict]) -> dict[str, dict[str, float]]:
    """items/s of each worker count divided by 1 worker's, per series (same run only)."""
    base = {_series(r): r["items_per_s"] for r in rows if r.get("workers") == 1}
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        one = base.get(_series(r))
        if one and r.get("workers") is not None:
            out.setdefault(_series(r), {})[str(r["workers"])] = r["items_per_s"] / one
    return out


HEADER = (
    f"{'workers':>7} {'batching':>8} {'scenario':<10} {'users':>5} {'batch':>5} {'requests':>8} "
    f"{'req/s':>7} {'items/s':>7} {'p50 ms':>6} {'p95 ms':>6} {'p99 ms':>6} {'failures':>8}"
)


def format_row(r: dict) -> str:
    def ms(v: float | None) -> str:  # locust's are whole ms; the exact scenario's are not
        return "n/a" if v is None else (f"{v:.0f}" if v == int(v) else f"{v:.2f}")

    return (
        f"{r.get('workers') or '-':>7} {r.get('batching') or '-':>8} {r['scenario']:<10} "
        f"{r['users']:>5} {r['batch']:>5} "
        f"{r['requests']:>8} {r['requests_per_s']:>7.1f} {r['items_per_s']:>7.1f} "
        f"{ms(r['p50_ms']):>6} {ms(r['p95_ms']):>6} {ms(r['p99_ms']):>6} {r['failures']:>8}"
    )


def format_table(rows: list[dict], ratios: dict[str, dict[str, float]]) -> str:
    """The rows, then items/s per worker count against 1 worker when several were run."""
    lines = [HEADER, *(format_row(r) for r in rows)]
    if any(len(by) > 1 for by in ratios.values()):
        lines.append("items/s relative to 1 worker (same run), by workers:")
        for scenario, by in ratios.items():
            ratio = "  ".join(f"{n}: {x:.2f}x" for n, x in by.items())
            lines.append(f"  {scenario:<30} {ratio}")
    return "\n".join(lines)
