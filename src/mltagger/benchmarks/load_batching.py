"""What the load test adds for micro-batching (issue 34): the service with batching on and off in
one run, measured against the model's own speed.

- `exact_latency`: one client, one item per request, timed here to the microsecond (locust keeps
  two significant digits, too coarse to see a fraction of a millisecond added by a queue);
- `raw_throughput`: the served model's items/s at batch N in this process, no HTTP, no queue:
  the ceiling N clients could reach if every pass held one item of each;
- `comparisons`: items/s with batching on over off (same users, same workers, same run), and
  with batching on over the raw batch-N ceiling.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from mltagger.models.predict import Predictor


def exact_latency(
    url: str, items: list[dict], key: str | None = None, n: int = 300, warmup: int = 20
) -> dict:
    """POST /predict with one item, n times one after another on one kept-alive connection:
    p50/p95/p99 in ms (float), what one client alone waits. `key` lifts the per-client rate
    limit of keyless callers, as locust's users send it."""
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    times = []
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    try:
        for k in range(warmup + n):
            body = json.dumps({"items": [items[k % len(items)]]})
            t0 = time.perf_counter()
            conn.request("POST", "/predict", body, headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"POST /predict answered {resp.status} during the latency run")
            if k >= warmup:
                times.append((time.perf_counter() - t0) * 1000)
    finally:
        conn.close()
    ms = np.asarray(times)
    return {
        "scenario": "exact",
        "users": 1,
        "batch": 1,
        "requests": n,
        "failures": 0,
        "requests_per_s": 1000 / ms.mean(),
        "items_per_s": 1000 / ms.mean(),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def raw_throughput(
    model: Path, texts: list[str], sizes: list[int], threads: int | None, rounds: int = 40
) -> dict[int, float]:
    """Items/s of the model at each batch size, tokenisation and decision included, in this
    process (no HTTP): `rounds` batches of each size after a warm-up."""
    predictor = Predictor(model, batch_size=max(sizes), threads=threads, spinning=False)
    out = {}
    for size in sizes:
        batches = [
            [{"id": i, "text": texts[(r * size + i) % len(texts)]} for i in range(size)]
            for r in range(rounds)
        ]
        for batch in batches[:3]:
            predictor.predict(batch)
        t0 = time.perf_counter()
        for batch in batches:
            predictor.predict(batch)
        out[size] = size * rounds / (time.perf_counter() - t0)
    return out


def comparisons(rows: list[dict], raw: dict[int, float]) -> list[dict]:
    """Per (workers, scenario, users): items/s with batching on / off, and on / raw batch-N."""
    by_key = {(r["workers"], r["scenario"], r["users"], r.get("batching")): r for r in rows}
    out = []
    for (workers, scenario, users, batching), r in by_key.items():
        if batching != "on":
            continue
        off = by_key.get((workers, scenario, users, "off"))
        row = {"workers": workers, "scenario": scenario, "users": users}
        if off and off["items_per_s"]:
            row["on_over_off"] = r["items_per_s"] / off["items_per_s"]
            row["p50_on_minus_off_ms"] = (r["p50_ms"] or 0) - (off["p50_ms"] or 0)
        if scenario == "single" and raw.get(users):
            row["on_over_raw"] = r["items_per_s"] / raw[users]
        if len(row) > 3:
            out.append(row)
    return out


def format_comparisons(comps: list[dict], raw: dict[int, float]) -> str:
    lines = [
        "raw model items/s (this process, no HTTP): "
        + ", ".join(f"batch {b}: {v:.0f}" for b, v in sorted(raw.items()))
    ]
    for c in comps:
        parts = []
        if "on_over_off" in c:
            parts.append(
                f"batching on/off items/s {c['on_over_off']:.2f}x, p50 on-off "
                f"{c['p50_on_minus_off_ms']:+.2f} ms"
            )
        if "on_over_raw" in c:
            parts.append(f"{c['on_over_raw']:.0%} of raw batch-{c['users']}")
        lines.append(
            f"  {c['workers'] or '-'} worker(s), {c['scenario']}, {c['users']} users: "
            + "; ".join(parts)
        )
    return "\n".join(lines)
