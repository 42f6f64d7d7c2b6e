"""Prometheus metrics of the service: request counts and latency by route and status, tags and
review decisions by source, add outcomes, and store sizes by status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Prometheus metrics in a registry of this app's own (tests build many apps)."""

    def __init__(self) -> None:

        self.registry = CollectorRegistry()
        r = self.registry
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
        self.review_rate = Gauge(
            "mltagger_needs_review_ratio",
            "Share of items tagged since start that went to review",
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
        self.by_status = Gauge(
            "mltagger_store_items",
            "Items in the store by status (active: published; duplicate: held as a likely copy), "
            "whoever stored them (the API or `mltagger ingest`), read at each scrape",
            ["status"],
            registry=r,
        )
        self.feedback = Counter("mltagger_feedback", "Wrong-tag reports stored", registry=r)
        self._tagged = 0
        self._review = 0

    def observe_predictions(self, preds: Sequence[dict], dups: Sequence[Any]) -> None:
        for p in preds:
            self.predictions.labels(p["tag"]).inc()
            if p["needs_review"]:
                self.needs_review.inc()
        for d in dups:
            if d is not None:
                self.duplicates.labels(d.kind).inc()
        self._tagged += len(preds)
        self._review += sum(bool(p["needs_review"]) for p in preds)
        self.review_rate.set(self._review / self._tagged if self._tagged else 0.0)
