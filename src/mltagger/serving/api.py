"""The tagging service: `make serve` (FastAPI + uvicorn, config `conf/serve.yaml`).

Endpoints (OpenAPI docs at /docs):
  POST /predict        tag up to `limits.max_batch` items, with duplicate info; stores nothing
  POST /items          screen, tag and store one item (409 for an exact copy; a near duplicate
                       is stored held, status `duplicate`, or refused with policy reject)
  GET  /items          stored items, newest first (?status=active: what is published)
  POST /feedback       a user reports a wrong tag: stored, and the item goes back to review
  GET  /items/{id}     a stored item with its feedback
  GET  /review         items waiting for a person, paged;  POST /review/{id} sets the tag
  GET  /health         model, store and duplicate-screen state
  GET  /metrics        Prometheus: requests, latency, predictions per tag, needs_review rate

The model is loaded once, before the port is bound; with an ONNX export nothing imports torch.
Write endpoints need the `X-API-Key` header.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from mltagger.core.config import compose_config
from mltagger.core.errors import user_errors
from mltagger.core.paths import resolve_path
from mltagger.models.modelio import read_model_metadata
from mltagger.models.predict import Predictor
from mltagger.serving.limits import BodyLimit
from mltagger.serving.metrics import Metrics
from mltagger.serving.rollout import Rollout, check_candidate
from mltagger.serving.service import POLICIES, Tagger, prepare
from mltagger.serving.store import STATUSES, Store, StoreError, current_version, describe

log = logging.getLogger("mltagger.serve")


class ItemIn(BaseModel):
    """One piece of content. Unknown fields (e.g. an upstream id) are ignored."""

    model_config = ConfigDict(extra="ignore")
    title: str = Field(description="required, non-blank")
    description: str | None = Field(default="", description="may be empty")
    url: str | None = Field(default=None, description="where the content lives, if known")
    author_tag: str | None = Field(
        default=None,
        description="the tag the submitter chose, if any (an approved tag); stored beside the "
        "model's tag and used to estimate online precision",
    )


class PredictIn(BaseModel):
    items: list[ItemIn]


class FeedbackIn(BaseModel):
    item_id: int
    correct_tag: str
    comment: str | None = None


class ReviewIn(BaseModel):
    tag: str
    reviewer: str | None = None
    duplicate: bool | None = Field(
        default=None,
        description="for an item held as a likely duplicate (status `duplicate`): true keeps it "
        "out of what is published, false publishes it (status `active`); required for those",
    )


def _message(err: RequestValidationError) -> str:
    parts = []
    for e in err.errors()[:5]:
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "")
            parts.append(f"malformed JSON at character {e['loc'][-1]}: {reason}".rstrip(": "))
            continue
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts)


def create_app(tagger: Tagger, cfg: Any) -> FastAPI:
    """The FastAPI app over a ready Tagger (model loaded, store open)."""
    limits = cfg.limits
    tags = list(tagger.predictor.inference.approved_tags)
    policy = str(cfg.dedup.on_duplicate)
    if policy not in POLICIES:
        raise ValueError(f"dedup.on_duplicate must be one of {POLICIES}, got {policy!r}")
    api_key = cfg.get("api_key")
    if not api_key:
        api_key = secrets.token_urlsafe(24)
        print(
            f"no api_key configured (MLTAGGER_API_KEY or api_key=...): write endpoints take "
            f"this one for this process: X-API-Key: {api_key}",
            file=sys.stderr,
        )
    metrics = Metrics()
    app = FastAPI(
        title="mltagger",
        version=tagger.predictor.inference.model_version,
        description="Tags ML content under one approved tag, or sends it to review.",
    )
    app.state.tagger = tagger
    app.state.metrics = metrics

    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(request.method, path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - start)
        return response

    app.add_middleware(BodyLimit, max_bytes=int(limits.max_body_bytes))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={"detail": _message(err), "errors": err.errors()[:20]},
        )

    def require_key(x_api_key: str | None = Header(default=None)) -> None:
        if not x_api_key or not secrets.compare_digest(x_api_key, str(api_key)):
            raise HTTPException(401, "missing or wrong API key (header X-API-Key)")

    def check_tag(tag: str) -> str:
        if tag not in tags:
            raise HTTPException(422, f"unknown tag {tag!r}; approved tags: {', '.join(tags)}")
        return tag

    def check_items(items: Sequence[ItemIn]) -> list[dict]:
        out = []
        for k, it in enumerate(items):
            if len(it.title) > limits.max_title_chars:
                raise HTTPException(
                    413,
                    f"items.{k}.title has {len(it.title)} characters "
                    f"(max {limits.max_title_chars})",
                )
            desc = it.description or ""
            if len(desc) > limits.max_description_chars:
                raise HTTPException(
                    413,
                    f"items.{k}.description has {len(desc)} characters "
                    f"(max {limits.max_description_chars})",
                )
            if it.author_tag is not None and it.author_tag not in tags:
                raise HTTPException(
                    422,
                    f"items.{k}.author_tag {it.author_tag!r} is not an approved tag; "
                    f"approved tags: {', '.join(tags)}",
                )
            item = prepare(it.title, desc, it.url, it.author_tag)
            if not item["title"]:
                raise HTTPException(422, f"items.{k}.title is blank")
            out.append(item)
        return out

    def answer(pred: dict, dup) -> dict:
        pred = {k: v for k, v in pred.items() if k != "id"}
        return {**pred, "duplicate": dup.to_dict() if dup is not None else None}

    @app.post("/predict", summary="Tag items (nothing is stored)")
    def predict(body: PredictIn) -> dict:
        if not body.items:
            raise HTTPException(422, f"items is empty: send 1 to {limits.max_batch} items")
        if len(body.items) > limits.max_batch:
            raise HTTPException(
                413, f"{len(body.items)} items in one request (max {limits.max_batch})"
            )
        items = check_items(body.items)
        preds, dups, extra = tagger.analyze(items)
        metrics.observe_predictions(preds, dups)
        if extra["other"] is not None:  # scored off the request path
            mode, compute = tagger.rollout.mode, extra["other"]
            tagger.shadow.submit(lambda: metrics.observe_rollout(mode, preds, compute()))
        return {"items": [answer(p, d) for p, d in zip(preds, dups, strict=True)]}

    @app.post("/items", status_code=201, dependencies=[Depends(require_key)])
    def add_item(body: ItemIn) -> Any:
        (item,) = check_items([body])
        (out,) = tagger.add([item], source="api", policy=policy)
        metrics.observe_predictions([out.prediction], [out.duplicate])
        metrics.outcomes.labels(out.outcome, "api").inc()
        if not out.stored:
            dup = out.duplicate
            return JSONResponse(
                status_code=409,
                content={
                    "detail": f"duplicate ({dup.kind}) of item {dup.item_id}",
                    "duplicate_of": dup.item_id,
                    "kind": dup.kind,
                    "how": dup.how,
                    "similarity": dup.similarity,
                },
            )
        metrics.stored.inc()
        return {
            "item": tagger.store.get_item(out.item_id),
            "duplicate": out.duplicate.to_dict() if out.duplicate else None,
        }

    @app.get("/items", summary="Stored items, newest first; status=active is what is published")
    def list_items(
        status: str | None = Query(default=None, description=f"one of {', '.join(STATUSES)}"),
        limit: int = Query(
            default=int(cfg.review.page_size), ge=1, le=int(cfg.review.max_page_size)
        ),
        offset: int = Query(default=0, ge=0),
    ) -> dict:
        if status is not None and status not in STATUSES:
            raise HTTPException(422, f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        rows, total = tagger.store.list_items(status, limit, offset)
        return {"items": rows, "total": total, "limit": limit, "offset": offset}

    @app.get("/items/{item_id}")
    def get_item(item_id: int) -> dict:
        item = tagger.store.get_item(item_id)
        if item is None:
            raise HTTPException(404, f"no item with id {item_id}")
        return {**item, "feedback": tagger.store.feedback_for(item_id)}

    @app.post("/feedback", status_code=201, dependencies=[Depends(require_key)])
    def add_feedback(body: FeedbackIn) -> dict:
        check_tag(body.correct_tag)
        try:
            record = tagger.store.add_feedback(body.item_id, body.correct_tag, body.comment)
        except StoreError as err:
            raise HTTPException(404, str(err)) from None
        metrics.feedback.inc()
        return record

    @app.get("/review", summary="Items waiting for a person, oldest first")
    def review_queue(
        limit: int = Query(
            default=int(cfg.review.page_size), ge=1, le=int(cfg.review.max_page_size)
        ),
        offset: int = Query(default=0, ge=0),
    ) -> dict:
        rows, total = tagger.store.review_queue(limit, offset)
        return {"items": rows, "total": total, "limit": limit, "offset": offset}

    @app.post("/review/{item_id}", dependencies=[Depends(require_key)])
    def review(item_id: int, body: ReviewIn) -> dict:
        check_tag(body.tag)
        if tagger.store.get_item(item_id) is None:
            raise HTTPException(404, f"no item with id {item_id}")
        try:
            return tagger.store.review(item_id, body.tag, body.reviewer, body.duplicate)
        except StoreError as err:
            raise HTTPException(422, str(err)) from None

    @app.get("/health")
    def health() -> dict:

        return {
            "status": "ok",
            **tagger.health(),
            "store": {
                "url": describe(tagger.store.url),
                "schema_version": current_version(tagger.store.engine),
                "items": tagger.store.count_items(),
                "items_by_status": tagger.store.count_by_status(),
            },
        }

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> PlainTextResponse:

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
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def build_tagger(cfg: Any) -> Tagger:
    """Model, store and index from the serve config; clear errors for a missing model."""

    folder = resolve_path(cfg.model_dir, cfg.paths.root_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"model_dir={cfg.model_dir}: no such model folder ({folder}); make one with "
            "`make train` and `make export`, or point model_dir= at a run's model folder"
        )
    labels, _ = read_model_metadata(folder)

    def load(path: Path):
        return Predictor(
            path, threads=cfg.get("threads"), spinning=bool(cfg.get("onnx_spinning", False))
        )

    candidate, rollout = None, None
    if cfg.get("candidate"):
        rollout = Rollout.parse(cfg.get("rollout"))
        candidate = load(check_candidate(resolve_path(cfg.candidate, cfg.paths.root_dir), labels))
    monitor = cfg.get("monitor") or {}
    store = Store(str(cfg.store.url))
    return Tagger(
        load(folder),
        store,
        dedup=bool(cfg.dedup.enabled),
        near_threshold=cfg.dedup.get("near_threshold"),
        screen_file=resolve_path(cfg.dedup.screen_file, cfg.paths.root_dir),
        candidate=candidate,
        rollout=rollout,
        audit_share=float(monitor.get("audit_share", 0.0)),
        model_link=folder if folder.is_symlink() else None,
        loader=load,
    )


def snapshot_age(snapshot: dict) -> float:
    stamp = datetime.fromisoformat(snapshot["created_at"])
    return max(0.0, (datetime.now(timezone.utc) - stamp).total_seconds())


def main(argv: Sequence[str] | None = None) -> int:
    """`mltagger serve [hydra overrides]`: the service on uvicorn, one process."""
    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    with user_errors():
        cfg = compose_config("serve", list(sys.argv[1:] if argv is None else argv))
        tagger = build_tagger(cfg)
        app = create_app(tagger, cfg)

    log.info(
        "model %s (%s), store %s, %d items; docs at http://%s:%s/docs",
        tagger.predictor.inference.model_version,
        tagger.predictor.backend,
        describe(tagger.store.url),
        tagger.store.count_items(),
        cfg.host,
        cfg.port,
    )
    uvicorn.run(app, host=str(cfg.host), port=int(cfg.port), log_level="info", access_log=False)
    return 0
