"""`create_app`: one service over a ready Tagger (model loaded, store open), assembled from the
routers of `mltagger.serving.api` and the pages of `mltagger.serving.pages`.

Keys live hashed in the store (`mltagger keys create|list|revoke`); every write records the key's
name (`written_by`). The document states every rule the server enforces (`schemas.py`) and every
status it answers, all errors in one shape. The model is loaded once per worker, before the port
is bound; with an ONNX export nothing imports torch. With several workers each one syncs its
duplicate index from the store and stores under the store's write lock (`Store.exclusive`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from mltagger.serving.access import SCHEME, Shared
from mltagger.serving.api import feedback, items, operations, review, tags, why
from mltagger.serving.api.per_app import app_models, bound
from mltagger.serving.batching import Overloaded
from mltagger.serving.keys import count_live
from mltagger.serving.limits import BodyLimit
from mltagger.serving.metrics import Metrics, method_label
from mltagger.serving.pages import add_pages
from mltagger.serving.schemas import build_schemas, validation_errors, validation_message
from mltagger.serving.service import Tagger, check_policy
from mltagger.serving.store import STATUSES

log = logging.getLogger("mltagger.serve")

# Operations the public may call without a key; a key (any role) lifts the rate limit of the
# writes, and a key of role review shows the reads in full.
OPTIONAL_KEY = ("predict", "add_feedback", "list_items", "get_item", "health")
ROUTERS = (
    items.router,
    feedback.router,
    review.router,
    operations.router,
    tags.router,
    why.router,
)


def create_app(tagger: Tagger, cfg: Any) -> FastAPI:
    """The FastAPI app over a ready Tagger: its state, its middleware, its routers and pages."""
    limits, policy = cfg.limits, check_policy(str(cfg.dedup.on_duplicate))
    tags = list(tagger.predictor.inference.approved_tags)
    schemas = build_schemas(
        tags,
        STATUSES,
        int(limits.max_batch),
        int(limits.max_title_chars),
        int(limits.max_description_chars),
    )
    config_key = cfg.get("api_key") or None
    if not config_key and not count_live(tagger.store.engine):
        log.warning(
            "no API keys: POST /items and the review endpoints answer 401 until you make one "
            "(`mltagger keys create NAME --role admin`) or set api_key= / MLTAGGER_API_KEY"
        )
    # Swagger UI from files shipped in a package (fastapi-offline), never from a CDN: a script
    # fetched from another site would run on the same origin as the review pages.
    app = FastAPIOffline(
        redoc_url=None,
        static_url="/docs/static",
        title="mltagger",
        version=tagger.predictor.inference.model_version,
        description="Tags ML content under one approved tag, or sends it to review. "
        "Every rule the server enforces is stated here; every error has the ErrorOut shape.",
        lifespan=partial(drain, tagger),
    )
    app.state.shared = Shared(tagger, Metrics(), limits, policy, config_key, cfg.get("review"))
    app.state.tagger, app.state.metrics = tagger, app.state.shared.metrics
    # Added first, so it sits inside every other middleware, next to the endpoints: its 413 is
    # raised from the endpoint's own `receive` (a BaseHTTPMiddleware between them would wrap it
    # in an exception group, and a page's form read would end in a 500).
    app.add_middleware(BodyLimit, max_bytes=int(limits.max_body_bytes))
    app.middleware("http")(measure)
    app.exception_handler(RequestValidationError)(invalid)
    app.exception_handler(Overloaded)(overloaded)
    if tagger.batcher is not None:
        tagger.batcher.observer = app.state.metrics.observe_batch
    if (cfg.get("ui") or {}).get("enabled", True):
        add_pages(app, cfg.get("ui") or {})
    swap = app_models(schemas, cfg.review)
    for router in ROUTERS:
        app.include_router(bound(router, swap))
    app.openapi = lambda: openapi(app)  # type: ignore[method-assign]
    return app


async def measure(request: Request, call_next):
    """Count and time every request by route template and status (a fixed set of labels)."""
    start = time.perf_counter()
    response = await call_next(request)
    if response.status_code == 405:  # name every method of the path, not one route's
        response.headers["Allow"] = ", ".join(allowed(request.app, request.url.path))
    route = request.scope.get("route")
    path = getattr(route, "path", "unmatched")
    # a fixed set of labels: any token is a method to the HTTP parser, and every new label
    # value would be a series kept forever
    metrics = request.app.state.metrics
    metrics.requests.labels(method_label(request.method), path, str(response.status_code)).inc()
    metrics.latency.labels(path).observe(time.perf_counter() - start)
    return response


@asynccontextmanager
async def drain(tagger: Tagger, _app: FastAPI) -> AsyncIterator[None]:
    """At shutdown, the requests waiting for the model are answered before the worker ends."""
    yield
    if tagger.batcher is not None:
        await anyio.to_thread.run_sync(tagger.batcher.close)
    await anyio.to_thread.run_sync(tagger.save_index)  # the screen index, for the next start


async def overloaded(request: Request, err: Overloaded) -> JSONResponse:
    """503 with Retry-After: the request waited too long for the model (never a hang)."""
    request.app.state.metrics.overloaded.inc()
    return JSONResponse(
        status_code=503,
        content={"detail": str(err)},
        headers={"Retry-After": str(err.retry_after_s)},
    )


async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
    """A refused request in the one error shape: a one-line `detail`, then each problem."""
    return JSONResponse(
        status_code=422,
        content={"detail": validation_message(err), "errors": validation_errors(err)},
    )


def allowed(app: FastAPI, path: str) -> list[str]:
    """Every method some route of the app answers on this path (the 405's Allow header)."""
    methods: set[str] = set()
    for route in app.routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def openapi(app: FastAPI) -> dict:
    """FastAPI's document, with the public operations' key marked optional."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        for path_item in doc["paths"].values():
            for op in path_item.values():
                if op.get("operationId") in OPTIONAL_KEY:
                    op["security"] = [{}, {SCHEME: []}]
        app.openapi_schema = doc
    return app.openapi_schema
