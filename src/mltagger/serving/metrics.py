"""Prometheus metrics of the service: request counts and latency by route and status, tags and
review decisions by source, add outcomes, store sizes by status, the review backlog, the
disagreement of a shadow or canary candidate, and the latest figures of `mltagger monitor`
(online precision per tag, signal and model version; drift), which the service only exports:
they are computed by the monitor job, never on the request path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from mltagger.models.rule import REASON_OUT_OF_SCOPE


class Metrics:
    """Prometheus metrics in a registry of this app's own (tests build many apps).

    With several workers (`PROMETHEUS_MULTIPROC_DIR` set before the workers start) every worker
    writes its values to that folder and `render` adds them up across processes; a gauge read
    from the store at scrape time keeps the most recent value (`multiprocess_mode`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._traffic(self.registry)
        self._rollout(self.registry)
        self._monitor(self.registry)
        self._tagged = 0
        self._review = 0

    def _traffic(self, r: CollectorRegistry) -> None:
        """Requests, tags, duplicates and what was stored; the store and the review backlog."""
        self.requests = Counter(
            "mltagger_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "mltagger_request_duration_seconds",
            "Time to answer a request",
            ["route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.predictions = Counter(
            "mltagger_predictions", "Items tagged, by answered tag", ["tag"], registry=r
        )
        self.needs_review = Counter(
            "mltagger_needs_review", "Items tagged below the confidence threshold", registry=r
        )
        self.out_of_scope = Counter(
            "mltagger_out_of_scope",
            "Items the out-of-scope gate stopped (tag `other`, applied without review)",
            registry=r,
        )
        self.review_rate = Gauge(
            "mltagger_needs_review_ratio",
            "Share of items tagged since start that went to review",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.duplicates = Counter(
            "mltagger_duplicates", "Duplicates found, by kind", ["kind"], registry=r
        )
        self.outcomes = Counter(
            "mltagger_add_outcomes",
            "Items sent to be stored, by what happened (stored, stored_held_duplicate, "
            "skipped_exact_copy, rejected_near_duplicate)",
            ["outcome", "source"],
            registry=r,
        )
        self.stored = Counter("mltagger_items_stored", "Items stored", registry=r)
        self.batch_size = Histogram(
            "mltagger_batch_items",
            "Items in each forward pass of the micro-batcher",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.queue_wait = Histogram(
            "mltagger_batch_queue_wait_seconds",
            "Time a request waited in the micro-batcher's queue before its pass started",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5),
            registry=r,
        )
        self.overloaded = Counter(
            "mltagger_overloaded",
            "Requests answered 503: they waited longer than batching.queue_timeout_ms",
            registry=r,
        )
        self.by_status = Gauge(
            "mltagger_store_items",
            "Items in the store by status (active: published; duplicate: held as a likely copy), "
            "whoever stored them (the API or `mltagger ingest`), read at each scrape",
            ["status"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.feedback = Counter("mltagger_feedback", "Wrong-tag reports stored", registry=r)
        self.backlog = Gauge(
            "mltagger_review_backlog_items",
            "Items waiting for a person",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.backlog_age = Gauge(
            "mltagger_review_backlog_oldest_seconds",
            "How long the oldest item in the review queue has waited",
            multiprocess_mode="mostrecent",
            registry=r,
        )

    def _rollout(self, r: CollectorRegistry) -> None:
        """A shadow or canary candidate: how often it was compared, disagreed, was dropped."""
        self.shadow_compared = Counter(
            "mltagger_rollout_compared",
            "Items answered by both the current model and the candidate",
            ["mode"],
            registry=r,
        )
        self.shadow_disagree = Counter(
            "mltagger_rollout_disagreements",
            "Items the current model and the candidate tagged differently",
            ["mode"],
            registry=r,
        )
        self.shadow_dropped = Gauge(
            "mltagger_rollout_dropped",
            "Items the candidate was not scored on because its queue was full (since start)",
            multiprocess_mode="livesum",
            registry=r,
        )

    def _monitor(self, r: CollectorRegistry) -> None:
        """From the latest `mltagger monitor` snapshot in the store, read at each scrape."""
        self.online_precision = Gauge(
            "mltagger_online_precision",
            "Online auto-tag precision over the monitor window, by tag (or `all`), proxy signal "
            "(audit, author, reports) and model version",
            ["tag", "signal", "model_version"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.online_precision_low = Gauge(
            "mltagger_online_precision_lower",
            "Lower end of the 95% Wilson interval of mltagger_online_precision",
            ["tag", "signal", "model_version"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.online_n = Gauge(
            "mltagger_online_precision_items",
            "Items behind mltagger_online_precision",
            ["tag", "signal", "model_version"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.window_review_ratio = Gauge(
            "mltagger_window_review_ratio",
            "Share of the monitor window's model-tagged items the model sent to review",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.drift_pvalue = Gauge(
            "mltagger_drift_pvalue",
            "p-value of each drift test on the monitor window (Bonferroni-adjusted)",
            ["test"],
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.drift_alarm = Gauge(
            "mltagger_drift_alarm",
            "1 when any drift test of the last window fired",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.cycle_tripped = Gauge(
            "mltagger_cycle_gate_tripped",
            "1 when the newest finished cycle stopped on a gate or was rolled back",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.cycle_paused = Gauge(
            "mltagger_cycle_paused",
            "1 while an admin has paused the continual-learning cycle",
            multiprocess_mode="mostrecent",
            registry=r,
        )
        self.monitor_age = Gauge(
            "mltagger_monitor_snapshot_age_seconds",
            "Age of the monitor figures exported here (-1: no monitor run yet)",
            multiprocess_mode="mostrecent",
            registry=r,
        )

    def export_cycle(self, state: dict) -> None:
        """The continual-learning cycle's state (mltagger.serving.cycles.alert_state)."""
        self.cycle_tripped.set(1 if state.get("tripped") else 0)
        self.cycle_paused.set(1 if state.get("paused") else 0)

    def observe_predictions(self, preds: Sequence[dict], dups: Sequence[Any]) -> None:
        for p in preds:
            self.predictions.labels(p["tag"]).inc()
            if p["needs_review"]:
                self.needs_review.inc()
            if p.get("reason") == REASON_OUT_OF_SCOPE:
                self.out_of_scope.inc()
        for d in dups:
            if d is not None:
                self.duplicates.labels(d.kind).inc()
        self._tagged += len(preds)
        self._review += sum(bool(p["needs_review"]) for p in preds)
        self.review_rate.set(self._review / self._tagged if self._tagged else 0.0)

    def observe_batch(self, items: int, waits: Sequence[float]) -> None:
        """One pass of the micro-batcher: its items and each request's wait in the queue."""
        self.batch_size.observe(items)
        for wait in waits:
            self.queue_wait.observe(wait)

    def observe_rollout(self, mode: str, served: Sequence[dict], other: Sequence[dict]) -> None:
        for a, b in zip(served, other, strict=True):
            self.shadow_compared.labels(mode).inc()
            if a["tag"] != b["tag"]:
                self.shadow_disagree.labels(mode).inc()

    def export_snapshot(self, snapshot: dict | None, age_seconds: float) -> None:
        """Set the monitor gauges from the latest snapshot (`mltagger monitor` writes it)."""
        for gauge in (self.online_precision, self.online_precision_low, self.online_n):
            gauge.clear()
        self.drift_pvalue.clear()
        if snapshot is None:
            self.monitor_age.set(-1)
            self.drift_alarm.set(0)
            return
        self.monitor_age.set(age_seconds)
        for row in snapshot.get("online", []):
            key = (row["tag"], row["signal"], row["model_version"])
            if row.get("precision") is not None:
                self.online_precision.labels(*key).set(row["precision"])
                self.online_precision_low.labels(*key).set(row["ci_low"])
            self.online_n.labels(*key).set(row["n"])
        self.window_review_ratio.set(snapshot.get("review_ratio") or 0.0)
        drift = snapshot.get("drift") or {}
        for test, value in (drift.get("pvalues") or {}).items():
            self.drift_pvalue.labels(test).set(value)
        self.drift_alarm.set(1 if drift.get("alarm") else 0)

    def render(self) -> bytes:
        """The text exposition: this process's registry, or every worker's values added up when
        the service runs several workers."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


# The request counter's method label: the methods of HTTP itself (RFC 9110, and PATCH) as they
# are, any other token the parser accepted as `other`, so label values stay a fixed set.
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)


def method_label(method: str) -> str:
    return method if method in METHODS else "other"
