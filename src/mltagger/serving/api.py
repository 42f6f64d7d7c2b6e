"""The tagging service: `make serve [WORKERS=N]` (FastAPI + uvicorn, config `conf/serve.yaml`).

Endpoints (OpenAPI document at /openapi.json, pages at /docs); who may call them:
  POST /predict          public, rate limited per client without a key   tag 1..max_batch items
  POST /feedback         public, rate limited per client without a key   report a wrong tag
  GET  /items, /items/{id}, /health, /metrics    public reads; without a key of role review,
                                                 published items only, in their public fields
  POST /items            key with role ingest (or admin)                 screen, tag, store one
  GET  /review, POST /review/{id}   key with role review (or admin)      the people in the loop
  /ui/review, /ui/item/{id}, /ui/health                                   pages for people (web.py)

Keys live hashed in the store (`mltagger keys create|list|revoke`); every write records the key's
name (`written_by`). The document states every rule the server enforces (`schemas.py`) and every
status it answers, all errors in one shape. The model is loaded once per worker, before the port
is bound; with an ONNX export nothing imports torch. With several workers each one syncs its
duplicate index from the store and stores under the store's write lock (`Store.exclusive`).

No `from __future__ import annotations`: the request models are built per app (`schemas.py`), and
FastAPI must see the endpoints' annotations as those classes, not as names to look up.

Over 400 lines because the endpoints are closures over one app's state (tagger, keys, limits,
metrics); the request models, the pages and the process handling already live apart.
"""

import logging
import math
import os
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST

from mltagger.serving.keys import (
    ADMIN,
    CONFIG_KEY_NAME,
    INGEST,
    REVIEW,
    Key,
    count_live,
    digest,
    find_key,
    same_secret,
)
from mltagger.serving.limits import BodyLimit, RateLimiter
from mltagger.serving.metrics import Metrics, method_label
from mltagger.serving.schemas import (
    BODY_ERRORS,
    ERR,
    INVALID,
    KEYED,
    MAX_ID,
    MAX_OFFSET,
    NOT_FOUND,
    PUBLIC,
    READ,
    AddOut,
    FeedbackOut,
    ItemOut,
    ItemWithFeedback,
    Page,
    build_schemas,
    links,
    public_feedback,
    public_item,
    published,
    validation_errors,
    validation_message,
)
from mltagger.serving.service import POLICIES, Tagger, prepare
from mltagger.serving.store import (
    ACTIVE,
    QUEUE_ORDERS,
    STATUSES,
    ReviewConflict,
    StoreError,
    current_version,
    describe,
)
from mltagger.serving.web import mount_ui

log = logging.getLogger("mltagger.serve")


QueueOrder = Literal[tuple(QUEUE_ORDERS)]  # type: ignore[valid-type]
SCHEME = "ApiKey"
PUBLIC_WRITER = "public"  # written_by of a wrong-tag report sent without a key
# Operations the public may call without a key; a key (any role) lifts the rate limit of the
# writes, and a key of role review shows the reads in full.
OPTIONAL_KEY = ("predict", "add_feedback", "list_items", "get_item", "health")


def create_app(tagger: Tagger, cfg: Any) -> FastAPI:
    """The FastAPI app over a ready Tagger (model loaded, store open)."""
    limits = cfg.limits
    tags = list(tagger.predictor.inference.approved_tags)
    policy = str(cfg.dedup.on_duplicate)
    if policy not in POLICIES:
        raise ValueError(f"dedup.on_duplicate must be one of {POLICIES}, got {policy!r}")
    schemas = build_schemas(
        tags,
        STATUSES,
        int(limits.max_batch),
        int(limits.max_title_chars),
        int(limits.max_description_chars),
    )
    ItemIn, PredictIn, FeedbackIn, ReviewIn = (
        schemas.item_in,
        schemas.predict_in,
        schemas.feedback_in,
        schemas.review_in,
    )
    config_key = cfg.get("api_key") or None
    engine = tagger.store.engine
    if not config_key and not count_live(engine):
        log.warning(
            "no API keys: POST /items and the review endpoints answer 401 until you make one "
            "(`mltagger keys create NAME --role admin`) or set api_key= / MLTAGGER_API_KEY"
        )
    limiter = RateLimiter(float(limits.public_per_minute), int(limits.public_burst))
    metrics = Metrics()
    # Swagger UI from files shipped in a package (fastapi-offline), never from a CDN: a script
    # fetched from another site would run on the same origin as the review pages.
    app = FastAPIOffline(
        redoc_url=None,
        static_url="/docs/static",
        title="mltagger",
        version=tagger.predictor.inference.model_version,
        description="Tags ML content under one approved tag, or sends it to review. "
        "Every rule the server enforces is stated here; every error has the ErrorOut shape.",
    )
    app.state.tagger = tagger
    app.state.metrics = metrics
    key_header = APIKeyHeader(
        name="X-API-Key",
        scheme_name=SCHEME,
        auto_error=False,
        description="an API key (`mltagger keys create`); its role decides what it may do",
    )

    key_security = Security(key_header)

    # Added first, so it sits inside every other middleware, next to the endpoints: its 413 is
    # raised from the endpoint's own `receive` (a BaseHTTPMiddleware between them would wrap it
    # in an exception group, and a page's form read would end in a 500).
    app.add_middleware(BodyLimit, max_bytes=int(limits.max_body_bytes))

    @app.middleware("http")
    async def measure(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        if response.status_code == 405:  # name every method of the path, not one route's
            response.headers["Allow"] = ", ".join(allowed(request.url.path))
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        # a fixed set of labels: any token is a method to the HTTP parser, and every new label
        # value would be a series kept forever
        metrics.requests.labels(method_label(request.method), path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={"detail": validation_message(err), "errors": validation_errors(err)},
        )

    def identify(secret: str) -> Key:
        if config_key and same_secret(secret, str(config_key)):
            return Key(CONFIG_KEY_NAME, ADMIN, digest(str(config_key)))
        key = find_key(engine, secret)
        if key is None:
            raise HTTPException(401, "wrong or revoked API key (header X-API-Key)")
        return key

    def needs(role: str):
        def check(secret: str | None = key_security) -> Key:
            if not secret:
                raise HTTPException(
                    401, f"missing API key (header X-API-Key): this needs a key with role {role}"
                )
            key = identify(secret)
            if not key.allows(role):
                raise HTTPException(403, f"key {key.name!r} has role {key.role}, not {role}")
            return key

        return check

    def limit(request: Request) -> None:
        client = request.client.host if request.client else "unknown"
        wait = limiter.allow(client)
        if wait:
            raise HTTPException(
                429,
                f"more than {limits.public_per_minute} calls a minute without a key from {client}",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def caller(request: Request, secret: str | None = key_security) -> Key | None:
        """The key's owner, or None for the public (the reads' dependency: the public sees
        published items in their public fields). A wrong key counts against the client's public
        rate limit before it is refused, so sending one never buys more calls."""
        if not secret:
            return None
        try:
            return identify(secret)
        except HTTPException:
            limit(request)
            raise

    def public(request: Request, secret: str | None = key_security) -> Key | None:
        """A caller without a key is rate limited per client address; a key lifts the limit."""
        key = caller(request, secret)
        if key is None:
            limit(request)
        return key

    def sees_all(key: Key | None) -> bool:
        return key is not None and key.allows(REVIEW)

    if (cfg.get("ui") or {}).get("enabled", True):
        mount_ui(
            app, tagger, cfg, identify=identify, public_limiter=limiter,
            config_key_hash=digest(str(config_key)) if config_key else None,
        )  # fmt: skip

    # FastAPI reads dependencies and parameters from defaults; made once here
    as_ingest, as_reviewer, as_public, as_reader = (
        Depends(needs(INGEST)),
        Depends(needs(REVIEW)),
        Depends(public),
        Depends(caller),
    )
    any_status = Query(default=None, description="only items with this status")

    def check_items(items: Sequence[Any]) -> list[dict]:
        return [prepare(it.title, it.description or "", it.url, it.author_tag) for it in items]

    def answer(pred: dict, dup, key: Key | None) -> dict:
        pred = {k: v for k, v in pred.items() if k != "id"}
        if dup is not None and dup.item_id is not None and not sees_all(key):
            # the public learns nothing of an item it cannot read, not even that it exists
            dup = dup if published(tagger.store.get_item(dup.item_id)) else None
        return {**pred, "duplicate": dup.to_dict() if dup is not None else None}

    @app.post(
        "/predict",
        summary="Tag items (nothing is stored)",
        operation_id="predict",
        response_model=schemas.predict_out,
        response_model_exclude_unset=True,
        responses={**BODY_ERRORS, **INVALID, **PUBLIC},
    )
    def predict(body: PredictIn, key: Key | None = as_public) -> dict:
        items = check_items(body.items)
        preds, dups, extra = tagger.analyze(items)
        metrics.observe_predictions(preds, dups)
        if extra["other"] is not None:  # scored off the request path
            mode, compute = tagger.rollout.mode, extra["other"]
            tagger.shadow.submit(lambda: metrics.observe_rollout(mode, preds, compute()))
        return {"items": [answer(p, d, key) for p, d in zip(preds, dups, strict=True)]}

    @app.post(
        "/items",
        status_code=201,
        summary="Screen, tag and store one item (role ingest)",
        operation_id="add_item",
        response_model=AddOut,
        response_model_exclude_unset=True,
        responses={
            201: {"description": "stored (a near duplicate is stored held)", "links": links()},
            **BODY_ERRORS,
            **INVALID,
            **KEYED,
            409: {**ERR, "description": "an exact copy (or, with policy reject, a near one)"},
        },
    )
    def add_item(body: ItemIn, key: Key = as_ingest) -> Any:
        (item,) = check_items([body])
        (out,) = tagger.add([item], source="api", policy=policy, written_by=key.name)
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

    page_limit = Query(default=int(cfg.review.page_size), ge=1, le=int(cfg.review.max_page_size))
    page_offset = Query(default=0, ge=0, le=MAX_OFFSET)
    queue_order = Query(
        default="oldest",
        description="; ".join(f"{k}: {v}" for k, v in QUEUE_ORDERS.items()),
    )

    @app.get(
        "/items",
        summary="Published items, newest first (with a key of role review: every item, any "
        "status, every field)",
        operation_id="list_items",
        response_model=Page,
        response_model_exclude_unset=True,  # the public projection stays as small as it is
        responses={**INVALID, **READ},
    )
    def list_items(
        status: schemas.status | None = any_status,
        limit: int = page_limit,
        offset: int = page_offset,
        key: Key | None = as_reader,
    ) -> dict:
        if not sees_all(key):
            if status not in (None, ACTIVE):
                raise HTTPException(
                    403, f"status={status}: only published items ({ACTIVE}) without a key of "
                    "role review"
                )  # fmt: skip
            status = ACTIVE
        rows, total = tagger.store.list_items(status, limit, offset)
        if not sees_all(key):
            rows = [public_item(r) for r in rows]
        return {"items": rows, "total": total, "limit": limit, "offset": offset}

    item_path = PathParam(ge=1, le=MAX_ID, description="an item id")

    @app.get(
        "/items/{item_id}",
        summary="A published item with its wrong-tag reports (with a key of role review: any "
        "item, every field)",
        operation_id="get_item",
        response_model=ItemWithFeedback,
        response_model_exclude_unset=True,  # the public projection stays as small as it is
        responses={**INVALID, **NOT_FOUND, **READ},
    )
    def get_item(item_id: int = item_path, key: Key | None = as_reader) -> dict:
        item = tagger.store.get_item(item_id)
        if item is not None and sees_all(key):
            return {**item, "feedback": tagger.store.feedback_for(item_id)}
        if not published(item):  # the public never learns it exists
            raise HTTPException(404, f"no item with id {item_id}")
        reports = [public_feedback(f) for f in tagger.store.feedback_for(item_id)]
        return {**public_item(item), "feedback": reports}

    @app.post(
        "/feedback",
        status_code=201,
        summary="Report a wrong tag (public, rate limited without a key)",
        operation_id="add_feedback",
        response_model=FeedbackOut,
        responses={**BODY_ERRORS, **INVALID, **PUBLIC, **NOT_FOUND},
    )
    def add_feedback(body: FeedbackIn, key: Key | None = as_public) -> dict:
        if not sees_all(key) and not published(tagger.store.get_item(body.item_id)):
            raise HTTPException(404, f"no item with id {body.item_id}")  # as GET /items/{id}
        try:
            record = tagger.store.add_feedback(
                body.item_id, body.correct_tag, body.comment, key.name if key else PUBLIC_WRITER
            )
        except StoreError as err:
            raise HTTPException(404, str(err)) from None
        metrics.feedback.inc()
        return record

    @app.get(
        "/review",
        summary="Items waiting for a person, oldest first (role review)",
        operation_id="review_queue",
        response_model=Page,
        responses={**INVALID, **KEYED},
    )
    def review_queue(
        limit: int = page_limit,
        offset: int = page_offset,
        order: QueueOrder = queue_order,
        _key: Key = as_reviewer,
    ) -> dict:
        rows, total = tagger.store.review_queue(limit, offset, order)
        return {"items": rows, "total": total, "limit": limit, "offset": offset}

    @app.post(
        "/review/{item_id}",
        summary="A person sets an item's tag (role review)",
        operation_id="review_item",
        response_model=ItemOut,
        responses={
            **BODY_ERRORS,
            **INVALID,
            **KEYED,
            **NOT_FOUND,
            409: {
                **ERR,
                "description": "the item is held as a likely duplicate (say duplicate), or "
                "someone decided it after seen_review (`decided`: their review)",
            },
        },
    )
    def review(body: ReviewIn, item_id: int = item_path, key: Key = as_reviewer):
        if tagger.store.get_item(item_id) is None:
            raise HTTPException(404, f"no item with id {item_id}")
        try:
            # the key's name, never a name the client sends (`reviewer` is ignored)
            return tagger.store.review(
                item_id, body.tag, key.name, body.duplicate, written_by=key.name,
                seen_review=body.seen_review,
            )  # fmt: skip
        except ReviewConflict as err:
            return JSONResponse(status_code=409, content={"detail": str(err), "decided": err.other})
        except StoreError as err:
            raise HTTPException(409, str(err)) from None

    @app.get(
        "/health",
        summary="Whether the service is up, and the model's version (with an admin key: the "
        "store and duplicate-screen state too)",
        operation_id="health",
        responses={code: READ[code] for code in (401, 429)},
    )
    def health(key: Key | None = as_reader) -> dict:
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

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        summary="Prometheus metrics, added up across workers",
        operation_id="metrics",
    )
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
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def allowed(path: str) -> list[str]:
        methods: set[str] = set()
        for route in app.routes:
            regex = getattr(route, "path_regex", None)
            if regex is not None and regex.match(path):
                methods |= set(getattr(route, "methods", None) or ())
        return sorted(methods)

    def openapi() -> dict:
        """FastAPI's document, with the public operations' key marked optional."""
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for path_item in doc["paths"].values():
                for op in path_item.values():
                    if op.get("operationId") in OPTIONAL_KEY:
                        op["security"] = [{}, {SCHEME: []}]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def snapshot_age(snapshot: dict) -> float:
    stamp = datetime.fromisoformat(snapshot["created_at"])
    return max(0.0, (datetime.now(timezone.utc) - stamp).total_seconds())
