"""The items endpoints: tag items (`POST /predict`), store one (`POST /items`, role ingest) and
read them (`GET /items`, `GET /items/{id}`: published items in their public fields, or every
item in full with a key of role review).

No `from __future__ import annotations`: FastAPI reads the annotations as classes, and
`per_app.bound` swaps the stand-in models for each app's own.
"""

from collections.abc import Sequence
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import JSONResponse

from mltagger.serving.access import Shared, caller, needs, public, sees_all, shared
from mltagger.serving.api.per_app import (
    ITEM_PATH,
    PAGE_LIMIT,
    PAGE_OFFSET,
    ItemIn,
    PredictIn,
    PredictOut,
)
from mltagger.serving.keys import INGEST, Key
from mltagger.serving.schemas import (
    BODY_ERRORS,
    BUSY,
    ERR,
    INVALID,
    KEYED,
    NOT_FOUND,
    PUBLIC,
    READ,
    AddOut,
    ItemWithFeedback,
    Page,
    links,
    public_feedback,
    public_item,
    published,
)
from mltagger.serving.service import prepare
from mltagger.serving.store import ACTIVE, STATUSES

router = APIRouter()

Status = Literal[tuple(STATUSES)]  # type: ignore[valid-type]
# FastAPI reads dependencies and parameters from defaults; made once here
AS_INGEST, AS_PUBLIC, AS_READER, SHARED = (
    Depends(needs(INGEST)),
    Depends(public),
    Depends(caller),
    Depends(shared),
)
ANY_STATUS = Query(default=None, description="only items with this status")


def check_items(items: Sequence[Any]) -> list[dict]:
    """The request's items as the tagger takes them (text cleaned, link kept)."""
    return [prepare(it.title, it.description or "", it.url, it.author_tag) for it in items]


def answer(state: Shared, pred: dict, dup, key: Key | None) -> dict:
    """One prediction as /predict answers it: the public learns nothing of an item it cannot
    read, not even that it exists."""
    pred = {k: v for k, v in pred.items() if k != "id"}
    if dup is not None and dup.item_id is not None and not sees_all(key):
        dup = dup if published(state.tagger.store.get_item(dup.item_id)) else None
    return {**pred, "duplicate": dup.to_dict() if dup is not None else None}


def predict(body: PredictIn, key: Key | None = AS_PUBLIC, state: Shared = SHARED) -> dict:
    tagger, metrics = state.tagger, state.metrics
    items = check_items(body.items)
    preds, dups, extra = tagger.analyze(items)
    metrics.observe_predictions(preds, dups)
    if extra["other"] is not None:  # scored off the request path
        mode, compute = tagger.rollout.mode, extra["other"]
        tagger.shadow.submit(lambda: metrics.observe_rollout(mode, preds, compute()))
    return {"items": [answer(state, p, d, key) for p, d in zip(preds, dups, strict=True)]}


router.add_api_route(
    "/predict",
    predict,
    methods=["POST"],
    summary="Tag items (nothing is stored)",
    operation_id="predict",
    response_model=PredictOut,
    response_model_exclude_unset=True,
    responses={**BODY_ERRORS, **INVALID, **PUBLIC, **BUSY},
)


def add_item(body: ItemIn, key: Key = AS_INGEST, state: Shared = SHARED) -> Any:
    tagger, metrics = state.tagger, state.metrics
    (item,) = check_items([body])
    (out,) = tagger.add([item], source="api", policy=state.policy, written_by=key.name)
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


router.add_api_route(
    "/items",
    add_item,
    methods=["POST"],
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
        **BUSY,
    },
)


def list_items(
    status: Status | None = ANY_STATUS,
    limit: int = PAGE_LIMIT,
    offset: int = PAGE_OFFSET,
    key: Key | None = AS_READER,
    state: Shared = SHARED,
) -> dict:
    if not sees_all(key):
        if status not in (None, ACTIVE):
            raise HTTPException(
                403, f"status={status}: only published items ({ACTIVE}) without a key of role "
                "review"
            )  # fmt: skip
        status = ACTIVE
    rows, total = state.tagger.store.list_items(status, limit, offset)
    if not sees_all(key):
        rows = [public_item(r) for r in rows]
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


router.add_api_route(
    "/items",
    list_items,
    methods=["GET"],
    summary="Published items, newest first (with a key of role review: every item, any "
    "status, every field)",
    operation_id="list_items",
    response_model=Page,
    response_model_exclude_unset=True,  # the public projection stays as small as it is
    responses={**INVALID, **READ},
)


def get_item(item_id: int = ITEM_PATH, key: Key | None = AS_READER, state: Shared = SHARED) -> dict:
    store = state.tagger.store
    item = store.get_item(item_id)
    if item is not None and sees_all(key):
        return {**item, "feedback": store.feedback_for(item_id)}
    if not published(item):  # the public never learns it exists
        raise HTTPException(404, f"no item with id {item_id}")
    reports = [public_feedback(f) for f in store.feedback_for(item_id)]
    return {**public_item(item), "feedback": reports}


router.add_api_route(
    "/items/{item_id}",
    get_item,
    methods=["GET"],
    summary="A published item with its wrong-tag reports (with a key of role review: any "
    "item, every field)",
    operation_id="get_item",
    response_model=ItemWithFeedback,
    response_model_exclude_unset=True,  # the public projection stays as small as it is
    responses={**INVALID, **NOT_FOUND, **READ},
)
