"""`/ui/health`: the model's health for people with a session: versions and rollout, the
review backlog, and the monitor's last snapshot (online precision with its intervals, a
timeline, drift p-values) as charts.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from mltagger.models.modelio import PER_TAG_FILE
from mltagger.models.queue import STOP_GAIN, STOP_LABELS, stopping_point
from mltagger.models.rule import PROMISE
from mltagger.serving import charts
from mltagger.serving.cycles import alert_state, events, latest_cycles
from mltagger.serving.keys import ADMIN
from mltagger.serving.pages.proposals import proposals_context
from mltagger.serving.pages.rendering import REASONS, Pages, age, pages
from mltagger.serving.rollout import deployment_history

router = APIRouter(include_in_schema=False)
PAGES = Depends(pages)


@router.get("/ui/health")
def health_page(request: Request, ui: Pages = PAGES) -> Response:
    session = ui.session_of(request)
    if session is None:
        return RedirectResponse("/ui/login?next=/ui/health", status_code=303)
    return ui.render("health.html", title="Model health", session=session, csrf=session.csrf,
                     is_admin=session.key.allows(ADMIN), proposals=proposals_context(ui),
                     **health_context(ui))  # fmt: skip


def health_context(ui: Pages) -> dict:
    store = ui.store
    backlog = store.review_backlog()
    snap = store.latest_snapshot()
    context: dict[str, Any] = {
        "health": ui.shared.tagger.health(),
        "deployments": deployment_history(store.engine),
        "backlog": backlog,
        "backlog_age": age(backlog["oldest_seconds"]),
        "queue_reasons": store.queue_reasons(),
        "labels_pay": labels_pay(store.coverage_windows()),
        "reason_text": REASONS,
        "snap": snap,
        "target": ui.target,
        "charts": {},
        "by_tag": [],
        "by_model": [],
        "snap_age": "",
        "per_tag": promise_per_tag(ui.shared.tagger.predictor.folder),
        "cycle_alert": alert_state(store.engine),
        "cycles": latest_cycles(store.engine, 5),
        "cycle_events": [e for e in events(store.engine, 40) if e["kind"] != "step"][:15],
    }
    if snap is None:
        return context
    stamp = datetime.fromisoformat(snap["created_at"])
    context["snap_age"] = age((datetime.now(timezone.utc) - stamp).total_seconds())
    online = snap.get("online") or []
    overall = [r for r in online if r["model_version"] == "all"]
    context["by_tag"] = by_signal(overall, "tag")
    context["by_model"] = by_signal([r for r in online if r["tag"] == "all"], "model_version")
    context["charts"]["precision"] = charts.interval_chart(overall, ui.target)
    if snap.get("timeline"):
        context["charts"]["timeline"] = charts.timeline_chart(snap["timeline"], ui.target)
    drift = snap.get("drift") or {}
    if drift.get("pvalues"):
        context["charts"]["drift"] = charts.pvalue_chart(drift["pvalues"], drift["alpha"])
    return context


def promise_per_tag(folder: Path) -> list[dict]:
    """The serving model's per-tag operating points as its training run measured them
    (per_tag.json: CV, test, fresh), each cell marked kept or broken against the promise; empty
    for a folder made before the file existed, or one whose file is damaged (a page, not a 500)."""
    path = Path(folder) / PER_TAG_FILE
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text())
        for row in rows:
            for part in ("cv", "test", "fresh"):
                fig = row.get(part)
                if fig and fig.get("lower") is not None:
                    fig["kept"] = fig["lower"] >= PROMISE
    except (ValueError, TypeError, AttributeError, KeyError):  # damaged: shown as missing
        return []
    return rows


def labels_pay(windows: list[dict]) -> dict:
    """The stopping signal on the store's own reviews: whether the last labels still moved
    auto-tag coverage (the rule `mltagger simulate-labels` reports on its replay). Measurable
    only across model versions: with one model, coverage moves with the stream, not the labels."""
    stop = stopping_point(windows)
    first, last = (windows[0], windows[-1]) if windows else ({}, {})
    versions = sorted({v for w in windows for v in w.get("model_versions", [])})
    return {
        "windows": len(windows),
        # coverage moves only when a model that learned from the reviews is deployed
        "versions": versions,
        "labels": last.get("labels", 0),
        "coverage_first": first.get("coverage"),
        "coverage_last": last.get("coverage"),
        "stopped_at": stop,
        "per": STOP_LABELS,
        "gain": STOP_GAIN,
    }


def by_signal(rows: list[dict], by: str) -> list[dict]:
    """One line per `by` value, one cell per proxy signal."""
    out: dict[str, dict] = {}
    for r in rows:
        out.setdefault(str(r[by]), {"name": str(r[by])})[r["signal"]] = r
    names = sorted(out, key=lambda n: (n == "all", n))
    return [out[n] for n in names]
