"""The endpoints are module-level functions on module-level routers (issue 30): each can be
called alone with its state, and `per_app.bound` gives each app its own request models."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Literal

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from mltagger.models.modelio import read_model_metadata, write_model_metadata
from mltagger.screen.screening import EXACT, Duplicate
from mltagger.serving.access import Shared, needs
from mltagger.serving.api import feedback, items, operations, per_app, review
from mltagger.serving.api.per_app import PerApp, bound
from mltagger.serving.keys import ADMIN, INGEST, REVIEW, Key, create_key
from mltagger.serving.limits import RateLimiter
from mltagger.serving.metrics import Metrics
from mltagger.serving.rollout import Rollout
from mltagger.serving.service import prepare
from mltagger.serving.store import current_version
from tests.fakes import ReadsImagesAsText, make_model_folder

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
    body = SimpleNamespace(item_id=item_id, correct_tag="mlops", comment=None, secondary_tags=None)
    record = feedback.add_feedback(body=body, key=None, state=state)
    assert record["written_by"] == "public" and record["correct_tag"] == "mlops"
    assert state.metrics.feedback._value.get() == 1


def test_review_alone_records_the_keys_name(state):
    item_id = stored(state, "Image segmentation")
    body = SimpleNamespace(tag="mlops", duplicate=None, seen_review=None, secondary_tags=None)
    decided = review.review(body=body, item_id=item_id, key=REVIEWER, state=state)
    assert decided["tag"] == "mlops"
    (past,) = state.tagger.store.reviews_for(item_id)
    assert past["reviewer"] == past["written_by"] == "rita"


def test_health_alone_shows_the_store_only_to_an_admin(state):
    public = operations.health(key=None, state=state)
    assert set(public) == {"status", "model_version", "labels"}
    admin = operations.health(key=Key("ops", ADMIN, "1" * 64), state=state)
    assert admin["store"]["items"] == 0 and "worker_pid" in admin


def request_to(state: Shared, host: str = "203.0.113.7") -> SimpleNamespace:
    """What the dependencies read of a request: its app's state and the client's address."""
    app = SimpleNamespace(state=SimpleNamespace(shared=state))
    return SimpleNamespace(app=app, client=SimpleNamespace(host=host))


def test_needs_alone_asks_for_a_key_of_the_role(state):
    # made here, not at import: the dependency a router holds was made when it was imported
    check = needs(REVIEW)
    request = request_to(state)
    for missing in (None, ""):
        with pytest.raises(HTTPException) as err:
            check(request, missing)
        assert (err.value.status_code, err.value.detail) == (
            401,
            "missing API key (header X-API-Key): this needs a key with role review",
        )
    with pytest.raises(HTTPException) as err:
        check(request, "not-a-key")
    assert err.value.status_code == 401
    _, ingest = create_key(state.tagger.store.engine, "crawler", INGEST)
    with pytest.raises(HTTPException) as err:
        check(request, ingest)
    assert (err.value.status_code, err.value.detail) == (
        403,
        "key 'crawler' has role ingest, not review",
    )
    _, reviewer = create_key(state.tagger.store.engine, "ana", REVIEW)
    _, admin = create_key(state.tagger.store.engine, "root", ADMIN)
    assert (check(request, reviewer).name, check(request, reviewer).role) == ("ana", REVIEW)
    assert check(request, admin).name == "root"  # admin may do anything
    assert needs(INGEST)(request, admin).role == ADMIN


def test_add_feedback_alone_is_a_404_to_the_public_for_an_unpublished_item(state):
    rejected = stored(state, "Image segmentation", status="rejected")
    body = SimpleNamespace(
        item_id=rejected, correct_tag="mlops", comment="wrong", secondary_tags=None
    )
    with pytest.raises(HTTPException) as err:
        feedback.add_feedback(body=body, key=None, state=state)
    assert (err.value.status_code, err.value.detail) == (404, f"no item with id {rejected}")
    # a reviewer reports on any item, under the key's name
    record = feedback.add_feedback(body=body, key=REVIEWER, state=state)
    assert (record["item_id"], record["written_by"]) == (rejected, "rita")
    with pytest.raises(HTTPException) as err:
        feedback.add_feedback(
            body=SimpleNamespace(
                item_id=999, correct_tag="mlops", comment=None, secondary_tags=None
            ),
            key=REVIEWER,
            state=state,
        )
    assert err.value.status_code == 404


def test_review_alone_refuses_a_missing_item_and_answers_a_conflict_with_the_decision(state):
    with pytest.raises(HTTPException) as err:
        body = SimpleNamespace(tag="mlops", duplicate=None, seen_review=None, secondary_tags=None)
        review.review(body=body, item_id=999, key=REVIEWER, state=state)
    assert (err.value.status_code, err.value.detail) == (404, "no item with id 999")
    item_id = stored(state, "Image segmentation")
    first = SimpleNamespace(tag="mlops", duplicate=None, seen_review=0, secondary_tags=None)
    assert review.review(body=first, item_id=item_id, key=REVIEWER, state=state)["tag"] == "mlops"
    # a second person who also saw no review yet: nothing stored, told who decided what
    late = SimpleNamespace(tag="graph-learning", duplicate=None, seen_review=0, secondary_tags=None)
    bob = Key("bob", REVIEW, "2" * 64)
    answer = review.review(body=late, item_id=item_id, key=bob, state=state)
    assert answer.status_code == 409
    content = json.loads(answer.body)
    assert set(content) == {"detail", "decided"}
    assert content["decided"]["tag"] == "mlops" and content["decided"]["reviewer"] == "rita"
    assert content["detail"].startswith(f"item {item_id} was decided by rita in the meantime")
    assert state.tagger.store.get_item(item_id)["tag"] == "mlops"


def test_review_queue_alone_pages_in_the_order_asked_for(state):
    first, second, third = (stored(state, f"Nothing to go on {k}") for k in range(3))
    page = review.review_queue(limit=1, offset=1, order="oldest", _key=REVIEWER, state=state)
    assert [it["id"] for it in page["items"]] == [second]
    assert (page["total"], page["limit"], page["offset"]) == (3, 1, 1)
    state.tagger.store.add_feedback(third, "mlops", None, "public")
    reported = review.review_queue(limit=2, offset=0, order="reported", _key=REVIEWER, state=state)
    assert [it["id"] for it in reported["items"]] == [third, first]


def test_health_alone_gives_an_admin_the_store_in_full(state):
    stored(state, "Image segmentation")
    admin = operations.health(key=Key("ops", ADMIN, "1" * 64), state=state)
    store = state.tagger.store
    assert (
        admin["status"] == "ok" and admin["model_version"] == state.tagger.health()["model_version"]
    )
    assert admin["store"] == {
        "url": store.url,  # a SQLite file: no password to hide
        "schema_version": current_version(store.engine),
        "items": 1,
        "items_by_status": store.count_by_status(),
    }
    public = operations.health(key=REVIEWER, state=state)  # only an admin sees the store
    assert public == {"status": "ok", **{k: admin[k] for k in ("model_version", "labels")}}


def test_snapshot_age_is_the_seconds_since_the_monitor_wrote_it_never_negative():
    written = datetime.now(timezone.utc) - timedelta(seconds=90)
    assert operations.snapshot_age({"created_at": written.isoformat()}) == pytest.approx(90, abs=5)
    ahead = datetime.now(timezone.utc) + timedelta(seconds=60)  # a clock ahead of ours
    assert operations.snapshot_age({"created_at": ahead.isoformat()}) == 0.0


def published_item(state: Shared, title: str, description: str) -> int:
    """An item the model tags surely (an image keyword): stored published."""
    (out,) = state.tagger.add([prepare(title, description)], source="test")
    assert state.tagger.store.get_item(out.item_id)["status"] == "active"
    return out.item_id


def test_answer_alone_shows_the_public_a_duplicate_only_of_a_published_item(state):
    shown = stored(state, "Image segmentation")
    hidden = stored(state, "Graph image nets", status="rejected")
    pred = {"id": 7, "tag": "computer-vision"}

    def of(item_id: int) -> Duplicate:
        return Duplicate(EXACT, 1.0, item_id=item_id, how="text")

    public = items.answer(state, pred, of(shown), None)
    assert public == {
        "tag": "computer-vision",
        "duplicate": {"kind": "exact", "similarity": 1.0, "item_id": shown, "how": "text"},
    }
    assert items.answer(state, pred, of(hidden), None)["duplicate"] is None
    assert items.answer(state, pred, of(hidden), REVIEWER)["duplicate"]["item_id"] == hidden
    in_batch = Duplicate(EXACT, 1.0, batch_index=0, how="text")  # no stored item to hide
    assert items.answer(state, pred, in_batch, None)["duplicate"]["batch_index"] == 0


def test_get_item_alone_gives_a_reviewer_the_items_own_reports(state):
    first = stored(state, "Image segmentation")
    other = published_item(state, "Image captioning", "Describe a picture in words, in English.")
    state.tagger.store.add_feedback(first, "mlops", "not vision", "public")
    full = items.get_item(item_id=first, key=REVIEWER, state=state)
    assert [(f["item_id"], f["correct_tag"]) for f in full["feedback"]] == [(first, "mlops")]
    assert items.get_item(item_id=other, key=REVIEWER, state=state)["feedback"] == []
    with pytest.raises(HTTPException) as err:
        items.get_item(item_id=999, key=None, state=state)
    assert (err.value.status_code, err.value.detail) == (404, "no item with id 999")


def test_list_items_alone_pages_newest_first(state):
    ids = [
        published_item(state, "Image segmentation", "U-Net on scans."),
        published_item(state, "Image captioning", "Describe a picture in words, in English."),
        published_item(state, "Image retrieval", "Find similar photos in a large collection."),
    ]
    page = items.list_items(status=None, limit=1, offset=1, key=None, state=state)
    assert [it["id"] for it in page["items"]] == [ids[1]]
    assert (page["total"], page["limit"], page["offset"]) == (3, 1, 1)
    full = items.list_items(status="active", limit=2, offset=0, key=REVIEWER, state=state)
    assert [it["id"] for it in full["items"]] == [ids[2], ids[1]]


def test_predict_alone_compares_a_shadow_candidate_off_the_request_path(state, tmp_path):
    folder = make_model_folder(tmp_path / "candidate")
    labels, inference = read_model_metadata(folder)
    write_model_metadata(folder, labels, replace(inference, model_version="cand"))
    state.tagger.candidate = ReadsImagesAsText(folder)
    state.tagger.rollout = Rollout.parse("shadow")
    ask = [
        SimpleNamespace(title=t, description=d, url=None, author_tag=None)
        for t, d in (("Image segmentation", "U-Net on scans."), ("Graph nets", "On molecules."))
    ]
    out = items.predict(body=SimpleNamespace(items=ask), key=None, state=state)
    assert [p["tag"] for p in out["items"]] == ["computer-vision", "graph-learning"]
    state.tagger.wait_for_shadow()
    metrics = state.metrics
    assert metrics.shadow_compared.labels("shadow")._value.get() == 2
    assert metrics.shadow_disagree.labels("shadow")._value.get() == 1


def test_add_feedback_alone_names_an_item_missing_from_the_store(state):
    body = SimpleNamespace(item_id=999, correct_tag="mlops", comment=None, secondary_tags=None)
    with pytest.raises(HTTPException) as err:  # a reviewer passes the visibility check
        feedback.add_feedback(body=body, key=REVIEWER, state=state)
    assert (err.value.status_code, err.value.detail) == (404, "no item with id 999")


def gauge(text: str, name: str) -> float:
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))


def test_prometheus_alone_reads_the_store_and_the_monitors_snapshot(state):
    stored(state, "Image segmentation")
    answer = operations.prometheus(state=state)
    assert answer.headers["content-type"] == CONTENT_TYPE_LATEST
    text = answer.body.decode()
    assert gauge(text, 'mltagger_store_items{status="active"}') == 1.0
    assert gauge(text, 'mltagger_store_items{status="rejected"}') == 0.0
    assert gauge(text, "mltagger_monitor_snapshot_age_seconds") == -1.0  # no monitor run yet
    state.tagger.store.save_snapshot({"online": [], "drift": {"alarm": True}})
    text = operations.prometheus(state=state).body.decode()
    assert 0.0 <= gauge(text, "mltagger_monitor_snapshot_age_seconds") < 60
    assert gauge(text, "mltagger_drift_alarm") == 1.0


def test_limit_alone_counts_each_client_address_apart(state):
    state.public_limiter = RateLimiter(per_minute=60, burst=1)
    state.limit(request_to(state, "203.0.113.7"))
    with pytest.raises(HTTPException) as err:
        state.limit(request_to(state, "203.0.113.7"))
    assert (err.value.status_code, err.value.detail) == (
        429,
        "more than 60 calls a minute without a key from 203.0.113.7",
    )
    # header names are case-insensitive (Starlette sends them lower-case)
    assert {k.lower(): v for k, v in err.value.headers.items()} == {"retry-after": "1"}
    state.limit(request_to(state, "198.51.100.2"))  # another client has its own budget
    nowhere = SimpleNamespace(app=request_to(state).app, client=None)  # e.g. a Unix socket
    state.limit(nowhere)
    with pytest.raises(HTTPException) as err:
        state.limit(nowhere)
    assert err.value.detail.endswith("without a key from unknown")


def test_add_item_alone_stores_under_the_key_and_answers_a_copy_with_409(state):
    ingest = Key("crawler", INGEST, "3" * 64)
    body = SimpleNamespace(
        title="Image segmentation", description="U-Net on scans.", url=None, author_tag="mlops"
    )
    out = items.add_item(body=body, key=ingest, state=state)
    stored_item = out["item"]
    assert (stored_item["source"], stored_item["written_by"], stored_item["author_tag"]) == (
        "api",
        "crawler",
        "mlops",
    )
    assert out["duplicate"] is None and state.metrics.stored._value.get() == 1
    again = items.add_item(body=body, key=ingest, state=state)
    assert again.status_code == 409
    assert json.loads(again.body) == {
        "detail": f"duplicate (exact) of item {stored_item['id']}",
        "duplicate_of": stored_item["id"],
        "kind": "exact",
        "how": "text",
        "similarity": 1.0,
    }


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
