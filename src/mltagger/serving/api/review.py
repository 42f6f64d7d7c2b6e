"""The review endpoints (role review): the queue of items waiting for a person
(`GET /review`) and a person's decision (`POST /review/{id}`), recorded under the key's name.

No `from __future__ import annotations`: FastAPI reads the annotations as classes.
"""

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse

from mltagger.serving.access import Shared, needs, shared
from mltagger.serving.api.per_app import (
    ITEM_PATH,
    PAGE_LIMIT,
    PAGE_OFFSET,
    QUEUE_ORDER,
    ReviewIn,
)
from mltagger.serving.keys import REVIEW, Key
from mltagger.serving.schemas import (
    BODY_ERRORS,
    ERR,
    INVALID,
    KEYED,
    NOT_FOUND,
    ItemOut,
    Page,
)
from mltagger.serving.store import QUEUE_ORDERS, ReviewConflict, StoreError

router = APIRouter()

QueueOrder = Literal[tuple(QUEUE_ORDERS)]  # type: ignore[valid-type]
AS_REVIEWER, SHARED = Depends(needs(REVIEW)), Depends(shared)


def review_queue(
    limit: int = PAGE_LIMIT,
    offset: int = PAGE_OFFSET,
    order: QueueOrder = QUEUE_ORDER,
    _key: Key = AS_REVIEWER,
    state: Shared = SHARED,
) -> dict:
    rows, total = state.review_queue(limit, offset, order)
    return {"items": rows, "total": total, "limit": limit, "offset": offset}


router.add_api_route(
    "/review",
    review_queue,
    methods=["GET"],
    summary="Items waiting for a person, in the chosen order (role review)",
    operation_id="review_queue",
    response_model=Page,
    responses={**INVALID, **KEYED},
)


def review(
    body: ReviewIn, item_id: int = ITEM_PATH, key: Key = AS_REVIEWER, state: Shared = SHARED
):
    store = state.tagger.store
    if store.get_item(item_id) is None:
        raise HTTPException(404, f"no item with id {item_id}")
    try:
        # the key's name, never a name the client sends (`reviewer` is ignored)
        return store.review(
            item_id, body.tag, key.name, body.duplicate, written_by=key.name,
            seen_review=body.seen_review, secondary_tags=body.secondary_tags,
        )  # fmt: skip
    except ReviewConflict as err:
        return JSONResponse(status_code=409, content={"detail": str(err), "decided": err.other})
    except StoreError as err:
        raise HTTPException(409, str(err)) from None


router.add_api_route(
    "/review/{item_id}",
    review,
    methods=["POST"],
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
