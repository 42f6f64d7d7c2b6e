"""The approved tag list endpoints (role admin): read the list and its history, add, retire and
remove tags, and decide `discover`'s proposals, each change recorded under the key's name.
Changing the list never stops the service: the model keeps answering with its own labels.

No `from __future__ import annotations`: FastAPI reads the annotations as classes.
"""

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam

from mltagger.models.tag_rule import MAX_TAG_CHARS, TAG_NAME, TagListError
from mltagger.serving.access import Shared, needs, shared
from mltagger.serving.keys import ADMIN, Key
from mltagger.serving.schemas import BODY_ERRORS, INVALID, KEYED, MAX_ID
from mltagger.serving.tag_list import BadTagName, Serving, TagConflict, TagList, UnknownTag
from mltagger.serving.tag_proposals import accept_proposal, dismiss_proposal, list_proposals
from mltagger.serving.tag_schemas import (
    CONFLICT,
    UNKNOWN_TAG,
    HistoryOut,
    ProposalsOut,
    RemovedOut,
    TagIn,
    TagListOut,
    TagOut,
)

router = APIRouter()
AS_ADMIN, SHARED = Depends(needs(ADMIN)), Depends(shared)
# a name that breaks the naming rule can never be in the list: 422, as the document says
TAG_PATH = PathParam(
    min_length=1, max_length=MAX_TAG_CHARS, pattern=TAG_NAME.pattern, description="a tag name"
)
PROPOSAL_PATH = PathParam(ge=1, le=MAX_ID, description="a proposal id")
ADMIN_ONLY = {**KEYED}


def _tags(state: Shared) -> TagList:
    return TagList(state.tagger.store.engine)


def _serving(state: Shared) -> Serving:
    predictor = state.tagger.predictor
    return Serving(predictor.inference.model_version, tuple(predictor.labels))


def _answer(change):
    """Run a change; the list's one-line refusals as 404, 409 or 422."""
    try:
        return change()
    except UnknownTag as err:
        raise HTTPException(404, str(err)) from None
    except BadTagName as err:
        raise HTTPException(422, str(err)) from None
    except (TagConflict, TagListError) as err:
        raise HTTPException(409, str(err)) from None


def list_tags(_key: Key = AS_ADMIN, state: Shared = SHARED) -> dict:
    serving = _serving(state)
    return {
        "tags": _tags(state).rows(),
        "serving_model": serving.version,
        "serving_labels": list(serving.labels),
    }


def add_tag(body: TagIn, key: Key = AS_ADMIN, state: Shared = SHARED) -> dict:
    return _answer(lambda: _tags(state).add(body.name, key.name, body.description))


def retire_tag(name: str = TAG_PATH, key: Key = AS_ADMIN, state: Shared = SHARED) -> dict:
    return _answer(lambda: _tags(state).retire(name, key.name))


def remove_tag(name: str = TAG_PATH, key: Key = AS_ADMIN, state: Shared = SHARED) -> dict:
    return _answer(lambda: _tags(state).remove(name, key.name, _serving(state)))


def tag_history(
    limit: int = Query(default=50, ge=1, le=1000),
    tag: str | None = Query(default=None, max_length=64),
    _key: Key = AS_ADMIN,
    state: Shared = SHARED,
) -> dict:
    return {"events": _tags(state).history(limit, tag)}


def proposals(_key: Key = AS_ADMIN, state: Shared = SHARED) -> dict:
    return {"proposals": list_proposals(state.tagger.store.engine)}


def accept(proposal_id: int = PROPOSAL_PATH, key: Key = AS_ADMIN, state: Shared = SHARED):
    return _answer(lambda: accept_proposal(_tags(state), proposal_id, key.name))


def dismiss(proposal_id: int = PROPOSAL_PATH, key: Key = AS_ADMIN, state: Shared = SHARED):
    _answer(lambda: dismiss_proposal(state.tagger.store.engine, proposal_id, key.name))
    return {"proposals": list_proposals(state.tagger.store.engine)}


ROUTES = (
    ("/tags", list_tags, "GET", "The approved tag list, and what the serving model answers",
     "list_tags", TagListOut, {}),
    ("/tags", add_tag, "POST", "Add a tag, pending until a promoted model answers it",
     "add_tag", TagOut, {**BODY_ERRORS, **INVALID, **CONFLICT}),
    ("/tags/history", tag_history, "GET", "The list's changes, newest first, with who and when",
     "tag_history", HistoryOut, {**INVALID}),
    ("/tags/proposals", proposals, "GET", "Open tag proposals from `mltagger discover`",
     "tag_proposals", ProposalsOut, {}),
    ("/tags/proposals/{proposal_id}/accept", accept, "POST",
     "Accept a proposal: its tag joins the list as pending", "accept_tag_proposal", TagOut,
     {**INVALID, **CONFLICT, **UNKNOWN_TAG}),
    ("/tags/proposals/{proposal_id}/dismiss", dismiss, "POST", "Dismiss a proposal",
     "dismiss_tag_proposal", ProposalsOut, {**INVALID, **CONFLICT, **UNKNOWN_TAG}),
    ("/tags/{name}/retire", retire_tag, "POST",
     "Retire an active tag: the next promoted model may leave it out", "retire_tag", TagOut,
     {**INVALID, **CONFLICT, **UNKNOWN_TAG}),
    ("/tags/{name}", remove_tag, "DELETE",
     "Remove a tag the serving model does not answer (pending or retired)", "remove_tag",
     RemovedOut, {**INVALID, **CONFLICT, **UNKNOWN_TAG}),
)  # fmt: skip
for path, endpoint, method, summary, operation, model, errors in ROUTES:
    router.add_api_route(
        path,
        endpoint,
        methods=[method],
        summary=f"{summary} (role admin)",
        operation_id=operation,
        response_model=model,
        status_code=201 if operation == "add_tag" else 200,
        # every call may get 422; every POST's body may be unreadable or too large
        responses={**ADMIN_ONLY, **INVALID, **(BODY_ERRORS if method == "POST" else {}), **errors},
    )
