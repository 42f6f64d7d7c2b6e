"""The timing `make bench` and the export share: rounds interleaved, medians of the rounds."""

from __future__ import annotations

import time

from mltagger.models.timing import interleaved


def test_models_are_timed_in_interleaved_rounds_and_reported_as_medians():
    order: list[str] = []

    def call(name: str, delay: float):
        def answer(batch):
            if len(batch) == 1:
                order.append(name)
            time.sleep(delay)

        return answer

    items = list(range(3))
    timed = interleaved({"a": call("a", 0.0), "b": call("b", 0.002)}, items, rounds=2, warmup=1)
    # warm-up (1 call each), then a round of a, a round of b, again a, again b
    assert order == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3
    assert len(timed["a"]["runs"]) == 2
    assert timed["b"]["p50_ms"] > timed["a"]["p50_ms"] and timed["b"]["p50_ms"] >= 2.0
    assert timed["a"]["p50_ms"] <= timed["a"]["p99_ms"]
    assert timed["b"]["throughput_batch32_per_s"] < timed["a"]["throughput_batch32_per_s"]
