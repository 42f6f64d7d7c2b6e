"""`GET /items/{id}/why` (role review): the words that moved the serving model's score most and
the three nearest labelled training items (`mltagger.serving.why`), cached per (item, model
version) and rate limited per key (limits.public_per_minute and public_burst: each answer runs
the model once per word of the item).

No `from __future__ import annotations`: FastAPI reads the annotations as classes.
"""

from fastapi import APIRouter, Depends, HTTPException

from mltagger.serving.access import Shared, needs, shared, too_many
from mltagger.serving.api.per_app import ITEM_PATH
from mltagger.serving.keys import REVIEW, Key
from mltagger.serving.schemas import ERR, INVALID, KEYED, NOT_FOUND
from mltagger.serving.why_schemas import WhyOut

router = APIRouter()
AS_REVIEWER, SHARED = Depends(needs(REVIEW)), Depends(shared)


def why(item_id: int = ITEM_PATH, key: Key = AS_REVIEWER, state: Shared = SHARED) -> dict:
    too_many(
        state.why.limiter.allow(key.name),
        f"more than {state.limits.public_per_minute} explanations a minute for key {key.name!r}",
    )
    item = state.tagger.store.get_item(item_id)
    if item is None:
        raise HTTPException(404, f"no item with id {item_id}")
    return state.why.why(state.tagger.predictor, item)


router.add_api_route(
    "/items/{item_id}/why",
    why,
    methods=["GET"],
    summary="Why the serving model tags an item so: its top words and nearest training items "
    "(role review)",
    operation_id="why_item",
    response_model=WhyOut,
    responses={
        **INVALID,
        **KEYED,
        **NOT_FOUND,
        429: {**ERR, "description": "too many explanations for this key; see Retry-After"},
    },
)
