"""The operations endpoints: `GET /health` (is it up, which model; with an admin key the store
and duplicate-screen state too) and `GET /metrics` (Prometheus, added up across workers).

No `from __future__ import annotations`: FastAPI reads the annotations as classes.
"""

import os
from datetime import datetime, timezone

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from mltagger.serving.access import Shared, caller, shared
from mltagger.serving.cycles import alert_state
from mltagger.serving.keys import ADMIN, Key
from mltagger.serving.schemas import READ
from mltagger.serving.store import STATUSES, current_version, describe

router = APIRouter()
AS_READER, SHARED = Depends(caller), Depends(shared)


def health(key: Key | None = AS_READER, state: Shared = SHARED) -> dict:
    tagger = state.tagger
    if key is None or not key.allows(ADMIN):  # no paths, hosts or process ids
        model = tagger.health()
        return {"status": "ok", **{k: model[k] for k in ("model_version", "labels")}}
    return {
        "status": "ok",
        **tagger.health(),
        "worker_pid": os.getpid(),
        "store": {
            "url": describe(tagger.store.url),
            "schema_version": current_version(tagger.store.engine),
            "items": tagger.store.count_items(),
            "items_by_status": tagger.store.count_by_status(),
        },
    }


router.add_api_route(
    "/health",
    health,
    methods=["GET"],
    summary="Whether the service is up, and the model's version (with an admin key: the "
    "store and duplicate-screen state too)",
    operation_id="health",
    responses={code: READ[code] for code in (401, 429)},
)


def prometheus(state: Shared = SHARED) -> PlainTextResponse:
    tagger, metrics = state.tagger, state.metrics
    counts = tagger.store.count_by_status()
    for status in STATUSES:
        metrics.by_status.labels(status).set(counts.get(status, 0))
    backlog = tagger.store.review_backlog()
    metrics.backlog.set(backlog["waiting"])
    metrics.backlog_age.set(backlog["oldest_seconds"])
    metrics.shadow_dropped.set(tagger.shadow.dropped)
    snapshot = tagger.store.latest_snapshot()
    age = snapshot_age(snapshot) if snapshot is not None else -1.0
    metrics.export_snapshot(snapshot, age)
    metrics.export_cycle(alert_state(tagger.store.engine))
    return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)


router.add_api_route(
    "/metrics",
    prometheus,
    methods=["GET"],
    response_class=PlainTextResponse,
    summary="Prometheus metrics, added up across workers",
    operation_id="metrics",
)


def snapshot_age(snapshot: dict) -> float:
    """Seconds since the monitor wrote the snapshot (a stale one is an alert of its own)."""
    stamp = datetime.fromisoformat(snapshot["created_at"])
    return max(0.0, (datetime.now(timezone.utc) - stamp).total_seconds())
