"""`POST /feedback`: anyone reports a wrong tag (public, rate limited without a key). The report
is stored beside the item and becomes a human label in `mltagger dataset build`.

No `from __future__ import annotations`: FastAPI reads the annotations as classes.
"""

from fastapi import APIRouter, Depends, HTTPException

from mltagger.serving.access import PUBLIC_WRITER, Shared, public, sees_all, shared
from mltagger.serving.api.per_app import FeedbackIn
from mltagger.serving.keys import Key
from mltagger.serving.schemas import (
    BODY_ERRORS,
    INVALID,
    NOT_FOUND,
    PUBLIC,
    FeedbackOut,
    published,
)
from mltagger.serving.store import StoreError

router = APIRouter()
AS_PUBLIC, SHARED = Depends(public), Depends(shared)


def add_feedback(body: FeedbackIn, key: Key | None = AS_PUBLIC, state: Shared = SHARED) -> dict:
    store = state.tagger.store
    if not sees_all(key) and not published(store.get_item(body.item_id)):
        raise HTTPException(404, f"no item with id {body.item_id}")  # as GET /items/{id}
    try:
        record = store.add_feedback(
            body.item_id, body.correct_tag, body.comment, key.name if key else PUBLIC_WRITER,
            secondary_tags=body.secondary_tags,
        )  # fmt: skip
    except StoreError as err:
        raise HTTPException(404, str(err)) from None
    state.metrics.feedback.inc()
    return record


router.add_api_route(
    "/feedback",
    add_feedback,
    methods=["POST"],
    status_code=201,
    summary="Report a wrong tag (public, rate limited without a key)",
    operation_id="add_feedback",
    response_model=FeedbackOut,
    responses={**BODY_ERRORS, **INVALID, **PUBLIC, **NOT_FOUND},
)
