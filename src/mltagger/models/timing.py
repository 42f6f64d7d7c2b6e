"""How fast a model answers, measured the same way wherever it is measured (`make bench`, and the
export's choice of what ships): each item as its own call (the latency a request pays), then the
items in batches of 32 (throughput), every model in interleaved rounds (A, B, C, A, B, C, ...)
so that a slow spell of a shared machine hits them alike, each figure the median of the rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

Call = Callable[[Sequence], object]  # answers a list of items (a predictor's method)


def one_round(call: Call, items: Sequence, batch: int = 32) -> dict:
    """p50/p95/p99/mean ms of single-item calls, then items/s in batches of `batch`."""
    times = []
    for item in items:
        t0 = time.perf_counter()
        call([item])
        times.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    for start in range(0, len(items), batch):
        call(list(items[start : start + batch]))
    batch_s = time.perf_counter() - t0
    ms = np.asarray(times)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "throughput_batch32_per_s": len(items) / batch_s,
    }


def interleaved(calls: dict[str, Call], items: Sequence, rounds: int = 3, warmup: int = 20):
    """Every model timed `rounds` times, the rounds interleaved: {name: {each figure's median
    over the rounds, "runs": the rounds}}."""
    for call in calls.values():
        for item in items[:warmup]:
            call([item])
    runs: dict[str, list[dict]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            runs[name].append(one_round(call, items))
    return {
        name: {key: float(np.median([r[key] for r in rs])) for key in rs[0]} | {"runs": rs}
        for name, rs in runs.items()
    }
