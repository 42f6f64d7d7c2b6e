"""Module-level routers, with the request models of one app.

Why this exists: the request models state the service's rules (the approved tags of the loaded
model, the configured batch size and text lengths, the page size), so each app builds its own
(`schemas.build_schemas`). FastAPI reads a body's model from the endpoint's signature when the
route is added, and a module-level endpoint can name only one class. So each router's
endpoints name a stand-in (`PerApp`), and `bound` copies a router for one app with its own
models in their place: the endpoints stay module-level functions (importable, testable alone),
and the OpenAPI document is the one the app's rules give.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.routing import APIRoute
from pydantic import BaseModel

from mltagger.serving.schemas import MAX_ID, MAX_OFFSET, Schemas
from mltagger.serving.store import QUEUE_ORDERS

# What `bound` copies of each route besides its path, endpoint and response model.
ROUTE_OPTIONS = (
    "methods",
    "status_code",
    "summary",
    "description",
    "operation_id",
    "responses",
    "response_model_exclude_unset",
    "response_class",
    "include_in_schema",
    "name",
    "tags",
    "deprecated",
    "response_description",
)


class PerApp(BaseModel):
    """A stand-in for a model each app builds. Its fields say what the endpoints read; the
    rules (tags, lengths, sizes) are the app's own."""


class ItemIn(PerApp):
    title: str
    description: str | None = ""
    url: str | None = None
    author_tag: str | None = None


class PredictIn(PerApp):
    items: list[ItemIn]


class PredictOut(PerApp):
    items: list[dict]


class FeedbackIn(PerApp):
    item_id: int
    correct_tag: str
    comment: str | None = None


class ReviewIn(PerApp):
    tag: str
    duplicate: bool | None = None
    seen_review: int | None = None


PAGE_LIMIT = Query(default=50, ge=1)  # the page size: conf/serve.yaml review.page_size
# The same for every app, shared by the routers (FastAPI reads parameters from defaults).
PAGE_OFFSET = Query(default=0, ge=0, le=MAX_OFFSET)
ITEM_PATH = PathParam(ge=1, le=MAX_ID, description="an item id")
ORDERS_HELP = "; ".join(f"{k}: {v}" for k, v in QUEUE_ORDERS.items())
# the queue order when none is asked for: conf/serve.yaml review.order
QUEUE_ORDER = Query(default="oldest", description=ORDERS_HELP)


def app_models(schemas: Schemas, review: Any) -> list[tuple[Any, Any]]:
    """Each stand-in with this app's own: its request models, and its page size and bound
    (`review`: the review section of conf/serve.yaml)."""
    page = Query(default=int(review.page_size), ge=1, le=int(review.max_page_size))
    order = Query(default=str(review.get("order") or "oldest"), description=ORDERS_HELP)
    return [
        (ItemIn, schemas.item_in),
        (PredictIn, schemas.predict_in),
        (PredictOut, schemas.predict_out),
        (FeedbackIn, schemas.feedback_in),
        (ReviewIn, schemas.review_in),
        (PAGE_LIMIT, page),
        (QUEUE_ORDER, order),
    ]


Swap = Sequence[tuple[Any, Any]]  # (stand-in, this app's own), compared by identity


def _swapped(value: Any, swap: Swap) -> Any:
    for stand_in, own in swap:
        if value is stand_in:
            return own
    if typing.get_origin(value) in (typing.Union, types.UnionType):
        return typing.Union[tuple(_swapped(a, swap) for a in typing.get_args(value))]  # noqa: UP007
    return value


def _endpoint_for(fn: Any, swap: Swap) -> Any:
    """A copy of the function whose signature names the app's models (the same code, so nothing
    wraps it and FastAPI runs it as it would run the original). FastAPI reads the signature
    with `inspect.signature`, which takes `__signature__` first: that also holds for a function
    mutmut has replaced by a trampoline that carries the original's signature."""
    copy = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
    )
    copy.__kwdefaults__ = fn.__kwdefaults__
    copy.__qualname__, copy.__module__, copy.__doc__ = fn.__qualname__, fn.__module__, fn.__doc__
    signature = inspect.signature(fn, eval_str=True)
    params = [
        p.replace(annotation=_swapped(p.annotation, swap), default=_swapped(p.default, swap))
        for p in signature.parameters.values()
    ]
    copy.__signature__ = signature.replace(
        parameters=params, return_annotation=_swapped(signature.return_annotation, swap)
    )
    return copy


def bound(router: APIRouter, swap: Swap) -> APIRouter:
    """The router's routes with this app's models in place of the stand-ins."""
    out = APIRouter()
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"{route!r}: only API routes can be bound")
        out.add_api_route(
            route.path,
            _endpoint_for(route.endpoint, swap),
            response_model=_swapped(route.response_model, swap),
            **{name: getattr(route, name) for name in ROUTE_OPTIONS},
        )
    return out
