"""The start benchmark of the screen's saved index (`mltagger.benchmarks.screen_start`) runs the
service's own start in spawned workers and reads their PSS: a small run, for its shape."""

from __future__ import annotations

import numpy as np

from mltagger.benchmarks.screen_start import measure_start
from mltagger.screen.sketch import Text, normalised, sketch_counts


def test_a_small_start_run_reports_each_mode_and_worker_count():
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefgh"), 5)) for _ in range(500)]
    items = [
        {"title": " ".join(rng.choice(words, 2)), "description": " ".join(rng.choice(words, 12))}
        for _ in range(120)
    ]
    counts = sketch_counts([Text(normalised(i["title"], i["description"])) for i in items])
    queries = np.eye(256, dtype=np.float32)[:20]
    settings = {"m": 4, "ef_construction": 8, "exact_max": 50, "ef_search": None}
    result = measure_start(items, counts, queries, 120, settings, workers=2, catch_up=30)
    assert result["catch_up"] == 30 and result["rebuild_s"] > 0
    runs = {(r["mode"], r["workers"]): r for r in result["runs"]}
    assert set(runs) == {("shared", 1), ("shared", 2), ("private", 1), ("private", 2)}
    for run in runs.values():
        assert run["items"] == 120 and len(run["pss_growth_mib"]) == run["workers"]
