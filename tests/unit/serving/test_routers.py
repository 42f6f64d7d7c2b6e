"""The endpoints are module-level functions on module-level routers (issue 30): each can be
called alone with its state, and `per_app.bound` gives each app its own request models."""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Literal

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel

from mltagger.serving.access import Shared
from mltagger.serving.api import feedback, items, operations, per_app, review
from mltagger.serving.api.per_app import PerApp, bound
from mltagger.serving.keys import ADMIN, REVIEW, Key
from mltagger.serving.metrics import Metrics
from mltagger.serving.service import prepare

LIMITS = SimpleNamespace(public_per_minute=60, public_burst=10)
REVIEWER = Key("rita", REVIEW, "0" * 64)


@pytest.fixture
def state(tagger) -> Shared:
    return Shared(tagger, Metrics(), LIMITS, "flag")


def stored(state: Shared, title: str, status: str | None = None) -> int:
    (out,) = state.tagger.add([prepare(title, "U-Net on scans.")], source="test")
    if status is not None:
        state.tagger.store.review(out.item_id, "computer-vision", "rita", reject=True)
    return out.item_id


def test_get_item_alone_hides_an_unpublished_item_from_the_public(state):
    rejected = stored(state, "Image segmentation", status="rejected")
    with pytest.raises(HTTPException) as err:
        items.get_item(item_id=rejected, key=None, state=state)
    assert err.value.status_code == 404
    shown = items.get_item(item_id=rejected, key=REVIEWER, state=state)
    assert shown["id"] == rejected and shown["status"] == "rejected"


def test_list_items_alone_refuses_other_statuses_to_the_public(state):
    with pytest.raises(HTTPException) as err:
        items.list_items(status="duplicate", limit=10, offset=0, key=None, state=state)
    assert err.value.status_code == 403
    page = items.list_items(status=None, limit=10, offset=0, key=REVIEWER, state=state)
    assert page["total"] == 0


def test_add_feedback_alone_counts_the_report(state):
    item_id = stored(state, "Image segmentation")
    body = SimpleNamespace(item_id=item_id, correct_tag="mlops", comment=None)
    record = feedback.add_feedback(body=body, key=None, state=state)
    assert record["written_by"] == "public" and record["correct_tag"] == "mlops"
    assert state.metrics.feedback._value.get() == 1


def test_review_alone_records_the_keys_name(state):
    item_id = stored(state, "Image segmentation")
    body = SimpleNamespace(tag="mlops", duplicate=None, seen_review=None)
    decided = review.review(body=body, item_id=item_id, key=REVIEWER, state=state)
    assert decided["tag"] == "mlops"
    (past,) = state.tagger.store.reviews_for(item_id)
    assert past["reviewer"] == past["written_by"] == "rita"


def test_health_alone_shows_the_store_only_to_an_admin(state):
    public = operations.health(key=None, state=state)
    assert set(public) == {"status", "model_version", "labels"}
    admin = operations.health(key=Key("ops", ADMIN, "1" * 64), state=state)
    assert admin["store"]["items"] == 0 and "worker_pid" in admin


class Thing(PerApp):
    name: str


def test_bound_gives_each_app_its_own_model_and_leaves_the_router_alone():
    router = APIRouter()

    def make(body: Thing) -> dict:
        return {"got": body.name}

    router.add_api_route("/things", make, methods=["POST"], operation_id="make")

    def app_with(names: tuple[str, ...]) -> TestClient:
        class ThingIn(BaseModel):
            name: Literal[names]  # type: ignore[valid-type]

        app = FastAPI()
        app.include_router(bound(router, [(Thing, ThingIn)]))
        return TestClient(app)

    first, second = app_with(("a", "b")), app_with(("c",))
    assert first.post("/things", json={"name": "a"}).json() == {"got": "a"}
    assert first.post("/things", json={"name": "c"}).status_code == 422
    assert second.post("/things", json={"name": "c"}).json() == {"got": "c"}
    assert second.post("/things", json={"name": "a"}).status_code == 422
    # the module-level router keeps its stand-in
    endpoint = router.routes[0].endpoint
    assert inspect.signature(endpoint, eval_str=True).parameters["body"].annotation is Thing


def test_bound_reads_a_signature_a_wrapper_carries():
    """mutmut replaces a function by a trampoline `(*args, **kwargs)` that carries the
    original's `__signature__`; the bound copy must still show FastAPI the real parameters."""

    def original(body: Thing, limit: int = per_app.PAGE_LIMIT) -> dict:
        return {"got": body.name, "limit": limit}

    def trampoline(*args, **kwargs):
        return original(*args, **kwargs)

    trampoline.__signature__ = inspect.signature(original, eval_str=True)
    page = per_app.Query(default=7, ge=1, le=9)
    copy = per_app._endpoint_for(trampoline, [(Thing, dict), (per_app.PAGE_LIMIT, page)])
    params = inspect.signature(copy).parameters
    assert params["body"].annotation is dict and params["limit"].default is page
    assert copy(body=Thing(name="x"), limit=3) == {"got": "x", "limit": 3}


def test_bound_refuses_a_route_that_is_not_an_api_route():
    router = APIRouter()
    router.add_websocket_route("/ws", lambda ws: None)
    with pytest.raises(TypeError, match="only API routes"):
        bound(router, [])
