"""The service's rules on a predictor whose answers are known (tests/fakes.py) and a real SQLite
file, through FastAPI's test client: who may write, what reaches the review queue, bounds, and
what the batch job counts. Fast enough for mutation testing (`make mutation`)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mltagger.core.config import compose_config
from mltagger.core.errors import ConfigError
from mltagger.serving.api import create_app
from mltagger.serving.ingest import ingest_file
from mltagger.serving.service import Tagger, prepare
from mltagger.serving.store import Store
from tests.fakes import FakePredictor, make_model_folder, write_screen

KEY = "unit-key"
H = {"X-API-Key": KEY}
MAX_BATCH = 4
MAX_BODY = 4000

SURE = {"title": "Image segmentation", "description": "U-Net on scans."}  # auto-tagged CV
UNSURE = {"title": "Nothing to go on", "description": "No words it knows."}  # to review


@pytest.fixture
def client(tagger, tmp_path):
    cfg = compose_config(
        "serve",
        [
            f"model_dir={tmp_path / 'model'}",
            f"api_key={KEY}",
            f"limits.max_batch={MAX_BATCH}",
            "limits.max_title_chars=200",
            "limits.max_description_chars=1000",
            f"limits.max_body_bytes={MAX_BODY}",
        ],
    )
    with TestClient(create_app(tagger, cfg)) as c:
        yield c


def add(client, item: dict) -> dict:
    r = client.post("/items", json=item, headers={"X-API-Key": KEY})
    assert r.status_code == 201, r.text
    return r.json()["item"]


def test_confident_items_are_applied_and_unsure_ones_queued_for_review(client):
    sure, unsure = add(client, SURE), add(client, UNSURE)
    assert (sure["tag"], sure["needs_review"], sure["reason"]) == (
        "computer-vision",
        False,
        "classifier",
    )
    assert (unsure["tag"], unsure["needs_review"], unsure["reason"]) == (
        "other",
        True,
        "low_confidence",
    )
    queue = client.get("/review", headers=H).json()
    assert [it["id"] for it in queue["items"]] == [unsure["id"]] and queue["total"] == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/items", SURE),
        ("POST", "/feedback", {"item_id": 1, "correct_tag": "mlops"}),
        ("POST", "/review/1", {"tag": "mlops"}),
        ("GET", "/review", None),
    ],
)
@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_writes_need_a_key_and_a_wrong_key_is_never_taken(client, method, path, body, key):
    """Keyed endpoints refuse a missing or wrong key; the public report endpoint takes no key
    but refuses a wrong one (a typo must not silently turn a reviewer into the public)."""
    item = add(client, UNSURE)
    assert item["id"] == 1
    headers = {} if key is None else {"X-API-Key": key}
    r = client.request(method, path, json=body, headers=headers)
    if path == "/feedback" and not key:
        assert r.status_code == 201 and r.json()["written_by"] == "public", r.text
        return
    assert r.status_code == 401, r.text
    assert "X-API-Key" in r.json()["detail"]
    # Nothing changed: one item, no feedback, still waiting for review with the model's tag.
    got = client.get("/items/1").json()
    assert got["feedback"] == [] and got["needs_review"] is True and got["tag"] == "other"
    assert got["tagged_by"] == "model" and client.get("/review", headers=H).json()["total"] == 1


def test_review_with_the_key_sets_a_human_tag(client):
    item = add(client, UNSURE)
    r = client.post(
        f"/review/{item['id']}",
        json={"tag": "mlops", "reviewer": "ana"},
        headers={"X-API-Key": KEY},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["tag"], r.json()["tagged_by"], r.json()["needs_review"]) == (
        "mlops",
        "human",
        False,
    )
    assert client.get("/review", headers=H).json()["total"] == 0
    bad = client.post(f"/review/{item['id']}", json={"tag": "robotics"}, headers={"X-API-Key": KEY})
    assert (
        bad.status_code == 422
        and "tag: Input should be 'natural-language-processing'" in (bad.json()["detail"])
    )
    assert client.get(f"/items/{item['id']}").json()["tag"] == "mlops"
    missing = client.post("/review/999", json={"tag": "mlops"}, headers={"X-API-Key": KEY})
    assert missing.status_code == 404


def test_feedback_with_an_unknown_tag_is_refused_and_not_stored(client):
    item = add(client, SURE)
    r = client.post(
        "/feedback",
        json={"item_id": item["id"], "correct_tag": "robotics", "comment": "x"},
        headers={"X-API-Key": KEY},
    )
    assert r.status_code == 422 and "correct_tag: Input should be" in r.json()["detail"]
    got = client.get(f"/items/{item['id']}").json()
    assert got["feedback"] == [] and got["needs_review"] is False
    ok = client.post(
        "/feedback",
        json={"item_id": item["id"], "correct_tag": "mlops"},
        headers={"X-API-Key": KEY},
    )
    assert ok.status_code == 201
    got = client.get(f"/items/{item['id']}").json()
    assert [f["correct_tag"] for f in got["feedback"]] == ["mlops"] and got["needs_review"]


def test_a_batch_of_exactly_max_batch_items_is_answered(client):
    items = [{"title": f"Image number {k}"} for k in range(MAX_BATCH)]
    r = client.post("/predict", json={"items": items})
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == MAX_BATCH
    over = client.post("/predict", json={"items": [*items, {"title": "one more"}]})
    assert over.status_code == 422, over.text
    assert f"items: List should have at most {MAX_BATCH} items" in over.json()["detail"]


def test_oversized_bodies_get_413_with_or_without_a_content_length(client):
    big = json.dumps({"items": [{"title": "x" * (MAX_BODY + 10)}]}).encode()
    declared = client.post("/predict", content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413 and f"{MAX_BODY} bytes" in declared.json()["detail"]
    assert declared.headers["content-type"] == "application/json"
    assert declared.json() == {"detail": f"request body larger than {MAX_BODY} bytes"}

    def chunks():  # no Content-Length: sent with Transfer-Encoding: chunked
        for k in range(0, len(big), 512):
            yield big[k : k + 512]

    chunked = client.post(
        "/predict", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert chunked.status_code == 413 and f"{MAX_BODY} bytes" in chunked.json()["detail"]
    small = json.dumps({"items": [SURE]}).encode()
    ok = client.post(
        "/predict", content=iter([small]), headers={"Content-Type": "application/json"}
    )
    assert ok.status_code == 200, ok.text


@pytest.fixture
def any_tagger(store_url, tmp_path):
    """A Tagger over SQLite and over PostgreSQL (tests/pg.py)."""
    store = Store(store_url)
    yield Tagger(
        FakePredictor(make_model_folder(tmp_path / "model")),
        store,
        screen_file=write_screen(tmp_path / "screen.json"),
    )
    store.close()


def test_ingest_counts_what_it_stored_and_queues_the_unsure_items(any_tagger, tmp_path):
    tagger = any_tagger
    drop = tmp_path / "drop.jsonl"
    rows = [
        SURE,
        {"title": "Forecast demand", "description": "Weekly sales."},
        UNSURE,
        {"title": "Graph forecast", "description": "Two topics at once."},
        {"title": "image segmentation!", "description": "u-net on scans"},  # exact copy of SURE
        {"title": "", "description": "no title"},
    ]
    drop.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = ingest_file(tagger, drop, progress=False)
    assert (s["rows"], s["valid"], s["rejected"], s["stored"]) == (6, 5, 1, 4)
    assert s["needs_review"] == 2
    assert s["stored_by_tag"] == {"other": 2, "computer-vision": 1, "time-series": 1}
    assert s["duplicates_skipped"] == 1 and s["duplicates_by_kind"] == {"exact_text": 1}
    assert s["outcomes"] == {
        "stored": 4,
        "stored_held_duplicate": 0,
        "skipped_exact_copy": 1,
        "rejected_near_duplicate": 0,
    }
    queue, total = tagger.store.review_queue(50)
    assert total == 2
    assert [it["title"] for it in queue] == [UNSURE["title"], "Graph forecast"]
    again = ingest_file(tagger, drop, progress=False)
    assert (again["stored"], again["needs_review"], again["duplicates_skipped"]) == (0, 0, 5)
    assert again["previous_runs_of_this_file"] == 1


def test_tagger_stores_the_decision_it_made(tagger):
    outs = tagger.add([prepare(**SURE), prepare(**UNSURE)], source="test")
    stored = [tagger.store.get_item(o.item_id) for o in outs]
    for out, row in zip(outs, stored, strict=True):
        assert row["needs_review"] is out.prediction["needs_review"]
        assert row["tag"] == out.prediction["tag"] and row["confidence"] == pytest.approx(
            out.prediction["confidence"]
        )
    assert [r["needs_review"] for r in stored] == [False, True]


@pytest.mark.parametrize(
    ("name", "body", "status", "message"),
    [
        ("title at the limit", {"items": [{"title": "image " + "x" * 194}]}, 200, None),
        (
            "title over",
            {"items": [{"title": "x" * 201}]},
            422,
            "items.0.title: String should have at most 200 characters",
        ),
        (
            "description at the limit",
            {"items": [{"title": "t", "description": "y" * 1000}]},
            200,
            None,
        ),
        (
            "description over",
            {"items": [{"title": "t", "description": "y" * 1001}]},
            422,
            "items.0.description: String should have at most 1000 characters",
        ),
        (
            "second title blank",
            {"items": [SURE, {"title": " \t "}]},
            422,
            "items.1.title: is blank",
        ),
        ("empty batch", {"items": []}, 422, "items: List should have at least 1 item"),
        ("missing title", {"items": [{"description": "x"}]}, 422, "items.0.title: Field required"),
        ("null description", {"items": [{"title": "Image", "description": None}]}, 200, None),
    ],
)
def test_predict_bounds_and_bad_items(client, name, body, status, message):
    r = client.post("/predict", json=body)
    assert r.status_code == status, (name, r.text)
    if message:
        assert r.json()["detail"] == message or message in r.json()["detail"], (name, r.json())


def test_predict_answers_without_ids_and_with_duplicates(client):
    body = {"items": [SURE, {**SURE, "title": SURE["title"].upper() + "!"}, UNSURE]}
    out = client.post("/predict", json=body).json()["items"]
    assert [set(p) for p in out] == [
        {
            "tag",
            "confidence",
            "tags",
            "needs_review",
            "reason",
            "scores",
            "model_version",
            "duplicate",
        }
    ] * 3
    # the primary tag is always first in `tags`; this model folder has no secondary head
    assert [p["tags"] for p in out] == [
        [{"tag": p["tag"], "confidence": p["confidence"], "primary": True}] for p in out
    ]
    assert out[0]["duplicate"] is None and out[2]["duplicate"] is None
    assert out[1]["duplicate"] == {
        "kind": "exact",
        "similarity": 1.0,
        "batch_index": 0,
        "how": "text",
    }
    assert [p["tag"] for p in out] == ["computer-vision", "computer-vision", "other"]
    assert client.get("/health", headers=H).json()["store"]["items"] == 0  # stores nothing


def test_items_keep_their_description_and_url(client):
    stored = add(client, {**SURE, "url": "https://example.org/unet"})
    got = client.get(f"/items/{stored['id']}").json()
    assert (got["title"], got["description"], got["url"]) == (
        SURE["title"],
        SURE["description"],
        "https://example.org/unet",
    )
    assert client.get("/items/12345").status_code == 404


def test_unknown_tag_message_lists_the_approved_tags(client):
    item = add(client, SURE)
    r = client.post(
        "/feedback", json={"item_id": item["id"], "correct_tag": "nlp"}, headers={"X-API-Key": KEY}
    )
    assert r.status_code == 422
    assert r.json()["detail"] == (
        "correct_tag: Input should be 'natural-language-processing', 'computer-vision', 'mlops', "
        "'reinforcement-learning', 'graph-learning', 'time-series' or 'other'"
    )
    assert [e["loc"] for e in r.json()["errors"]] == [["body", "correct_tag"]]
    r = client.post("/items", json=SURE)
    assert r.json()["detail"] == (
        "missing API key (header X-API-Key): this needs a key with role ingest"
    )


def test_keys_from_the_store_have_roles_and_record_who_wrote(client, tagger, capsys):
    """An ingest key stores items but cannot review (403); a review key reviews but cannot store;
    a revoked key is refused at once; rows record the key's name."""
    from mltagger.serving.keys import create_key, revoke_key

    _, ingest = create_key(tagger.store.engine, "crawler", "ingest")
    _, review = create_key(tagger.store.engine, "ana", "review")
    r = client.post("/items", json=UNSURE, headers={"X-API-Key": ingest})
    assert r.status_code == 201 and r.json()["item"]["written_by"] == "crawler"
    item_id = r.json()["item"]["id"]
    r = client.post(f"/review/{item_id}", json={"tag": "mlops"}, headers={"X-API-Key": ingest})
    assert r.status_code == 403 and "role ingest, not review" in r.json()["detail"]
    assert client.get("/review", headers={"X-API-Key": ingest}).status_code == 403
    assert client.post("/items", json=SURE, headers={"X-API-Key": review}).status_code == 403
    r = client.post(f"/review/{item_id}", json={"tag": "mlops"}, headers={"X-API-Key": review})
    assert r.status_code == 200 and r.json()["tag"] == "mlops"
    with tagger.store.engine.connect() as conn:
        (who,) = conn.exec_driver_sql("SELECT written_by FROM reviews").one()
    assert who == "ana"
    fb = client.post(
        "/feedback",
        json={"item_id": item_id, "correct_tag": "other"},
        headers={"X-API-Key": review},
    )
    assert fb.status_code == 201 and fb.json()["written_by"] == "ana"
    revoke_key(tagger.store.engine, "crawler")
    r = client.post("/items", json=SURE, headers={"X-API-Key": ingest})
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    # the config key is an admin key recorded as "config"
    r = client.post("/items", json=SURE, headers=H)
    assert r.status_code == 201 and r.json()["item"]["written_by"] == "config"


def test_public_calls_are_rate_limited_per_client_and_a_key_lifts_it(tagger, tmp_path):
    cfg = compose_config(
        "serve",
        [
            f"model_dir={tmp_path / 'model'}",
            f"api_key={KEY}",
            "limits.public_per_minute=60",
            "limits.public_burst=3",
        ],
    )
    with TestClient(create_app(tagger, cfg)) as c:
        body = {"items": [SURE]}
        codes = [c.post("/predict", json=body).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        r = c.post("/predict", json=body)
        assert r.json()["detail"].startswith("more than 60 calls a minute without a key")
        assert int(r.headers["retry-after"]) >= 1
        assert c.post("/predict", json=body, headers=H).status_code == 200


def test_without_any_key_the_service_warns_and_refuses_writes(tagger, tmp_path, caplog):
    cfg = compose_config("serve", [f"model_dir={tmp_path / 'model'}", "api_key=null"])
    with caplog.at_level("WARNING", logger="mltagger.serve"):
        app = create_app(tagger, cfg)
    assert "no API keys" in caplog.text and "mltagger keys create" in caplog.text
    with TestClient(app) as c:
        assert c.post("/items", json=SURE).status_code == 401
        assert c.post("/items", json=SURE, headers={"X-API-Key": "None"}).status_code == 401
        info = c.get("/openapi.json").json()["info"]
    assert info["title"] == "mltagger" and info["version"] == "fake-1"
    assert info["description"].startswith("Tags ML content under one approved tag")
    assert app.state.tagger is tagger and app.state.metrics is not None


def test_an_unknown_duplicate_policy_is_refused(tagger, tmp_path):
    cfg = compose_config(
        "serve", [f"model_dir={tmp_path / 'model'}", f"api_key={KEY}", "dedup.on_duplicate=keep"]
    )
    with pytest.raises(
        ConfigError, match=r"dedup.on_duplicate must be one of \('flag', 'reject'\), got 'keep'"
    ):
        create_app(tagger, cfg)


def test_prepare_cleans_fields_and_joins_the_text():
    from mltagger.data.text import join_text

    item = prepare("  Image  segmentation ", None, "https://x")
    assert item == {
        "title": "Image segmentation",
        "description": "",
        "url": "https://x",
        "author_tag": None,
        "text": join_text("Image segmentation", ""),
    }
    full = prepare("Title", " Some  description. ")
    assert full["description"] == "Some description." and full["url"] is None
    assert full["text"] == join_text("Title", "Some description.") != join_text("Title", "")


class _Recorder:
    """A raw ASGI exchange: the request body in chunks, and what the middleware sends."""

    def __init__(self, chunks: list[bytes], headers: list | None = None) -> None:
        self.chunks = list(chunks)
        self.sent: list[dict] = []
        self.scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or []}

    async def receive(self) -> dict:
        body = self.chunks.pop(0) if self.chunks else b""
        return {"type": "http.request", "body": body, "more_body": bool(self.chunks)}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    def statuses(self) -> list[int]:
        return [m["status"] for m in self.sent if m["type"] == "http.response.start"]


def _run_body_limit(app, rec: _Recorder, max_bytes: int = 10) -> None:
    import asyncio

    from mltagger.serving.limits import BodyLimit

    asyncio.run(BodyLimit(app, max_bytes=max_bytes)(rec.scope, rec.receive, rec.send))


async def _echo(scope, receive, send):
    """Reads the whole body, then answers 200 with its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


def test_body_limit_counts_chunks_up_to_exactly_the_limit():
    from mltagger.serving.limits import BodyTooLarge

    ok = _Recorder([b"12345", b"67890"])
    _run_body_limit(_echo, ok)
    assert ok.statuses() == [200] and ok.sent[1]["body"] == b"10"
    over = _Recorder([b"12345", b"67890", b"x"])
    with pytest.raises(BodyTooLarge) as err:  # from the app's receive, for the app to answer
        _run_body_limit(_echo, over)
    assert err.value.status_code == 413 and over.sent == []
    assert err.value.detail == "request body larger than 10 bytes"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/predict", "application/json"),
        ("/feedback", "application/json"),
        ("/ui/login", "application/x-www-form-urlencoded"),  # a page's form: was a 500
        ("/ui/item/1", "application/x-www-form-urlencoded"),
    ],
)
def test_a_chunked_body_over_the_limit_gets_413_on_every_route(client, path, content_type):
    def chunks():  # no Content-Length: the limit is found while the body arrives
        for _ in range(2 * MAX_BODY // 100):
            yield b"comment=" + b"a" * 92

    r = client.post(path, content=chunks(), headers={"Content-Type": content_type})
    assert r.status_code == 413, r.text
    assert r.json() == {"detail": f"request body larger than {MAX_BODY} bytes"}


def test_body_limit_trusts_a_declared_length_only_to_refuse_early():
    called = []

    async def app(scope, receive, send):
        called.append(True)
        await _echo(scope, receive, send)

    declared = _Recorder([b"small"], headers=[(b"content-length", b"11")])
    _run_body_limit(app, declared)
    assert declared.statuses() == [413] and not called
    # ASGI header names are lower-case bytes; the connection closes (the body is never read;
    # the connection option is case-insensitive)
    headers = [(name, value.lower()) for name, value in declared.sent[0]["headers"]]
    assert headers == [(b"content-type", b"application/json"), (b"connection", b"close")]
    exact = _Recorder([b"1234567890"], headers=[(b"content-length", b"10")])
    _run_body_limit(app, exact)
    assert exact.statuses() == [200]
    odd = _Recorder([b"abc"], headers=[(b"content-length", b"ten")])  # not a number: counted
    _run_body_limit(app, odd)
    assert odd.statuses() == [200]


def test_a_null_description_is_stored_empty(client):
    stored = add(client, {"title": "Image denoising", "description": None})
    assert client.get(f"/items/{stored['id']}").json()["description"] == ""
    assert prepare("Title only")["description"] == ""


def test_the_service_applies_the_folders_per_tag_thresholds(tmp_path):
    """A model folder shipping per-tag thresholds: the same confident CV item goes to review
    when computer-vision's own threshold is above its confidence, although the folder's global
    threshold would apply it."""
    from tests.fakes import LABELS

    folder = make_model_folder(
        tmp_path / "model",
        threshold=0.0,
        thresholds=dict.fromkeys(LABELS, 0.0) | {"computer-vision": 0.999},
    )
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        tagger = Tagger(FakePredictor(folder), store, near_threshold=0.99)
        cfg = compose_config("serve", [f"model_dir={folder}", f"api_key={KEY}"])
        with TestClient(create_app(tagger, cfg)) as c:
            got = add(c, SURE)
        assert (got["tag"], got["needs_review"]) == ("other", True)
        assert got["reason"] == "low_confidence"
    finally:
        store.close()


# -- the duplicate screen in the service: nothing lost for a guess --------------------------------

NEAR_COPY = {"title": "Image segmentation", "description": "U-Net on the scans!!"}  # near SURE


def test_a_near_copy_is_stored_held_for_review_and_kept_out_of_the_published_list(client):
    original = add(client, SURE)
    r = client.post("/items", json=NEAR_COPY, headers={"X-API-Key": KEY})
    assert r.status_code == 201, r.text
    held, dup = r.json()["item"], r.json()["duplicate"]
    assert dup["kind"] == "near" and dup["item_id"] == original["id"]
    assert (held["status"], held["duplicate_of"], held["needs_review"]) == (
        "duplicate",
        original["id"],
        True,
    )
    published = client.get("/items", params={"status": "active"}).json()
    assert [it["id"] for it in published["items"]] == [original["id"]]
    assert client.get("/items").json()["total"] == 1  # the public sees what is published
    assert client.get("/items", headers=H).json()["total"] == 2
    assert client.get("/items", params={"status": "gone"}).status_code == 422
    queue = client.get("/review", headers=H).json()["items"]
    assert [(it["id"], it["status"]) for it in queue] == [(held["id"], "duplicate")]
    # the person must answer the duplicate question; false publishes it
    r = client.post(
        f"/review/{held['id']}", json={"tag": "computer-vision"}, headers={"X-API-Key": KEY}
    )
    assert r.status_code == 409 and "likely duplicate of item" in r.json()["detail"]
    r = client.post(
        f"/review/{held['id']}",
        json={"tag": "computer-vision", "duplicate": False},
        headers={"X-API-Key": KEY},
    )
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert client.get("/items", params={"status": "active"}).json()["total"] == 2
    # an exact copy is refused with the id it repeats: the content already is in the store
    r = client.post(
        "/items", json={**SURE, "title": SURE["title"].upper()}, headers={"X-API-Key": KEY}
    )
    assert r.status_code == 409 and r.json()["duplicate_of"] == original["id"]
    metrics = client.get("/metrics").text
    assert (
        'mltagger_add_outcomes_total{outcome="stored_held_duplicate",source="api"} 1.0' in metrics
    )
    assert 'mltagger_add_outcomes_total{outcome="skipped_exact_copy",source="api"} 1.0' in metrics
    assert 'mltagger_store_items{status="active"} 2.0' in metrics
    health = client.get("/health", headers=H).json()
    assert health["store"]["items_by_status"] == {"active": 2}
    assert health["duplicate_screen"]["version"] == "lexical-1"


def test_with_policy_reject_a_near_copy_gets_409_and_is_not_stored(tagger, tmp_path):
    cfg = compose_config(
        "serve", [f"model_dir={tmp_path / 'model'}", f"api_key={KEY}", "dedup.on_duplicate=reject"]
    )
    with TestClient(create_app(tagger, cfg)) as c:
        first = c.post("/items", json=SURE, headers={"X-API-Key": KEY}).json()["item"]
        r = c.post("/items", json=NEAR_COPY, headers={"X-API-Key": KEY})
        assert r.status_code == 409 and r.json()["kind"] == "near"
        assert r.json()["duplicate_of"] == first["id"]
        assert c.get("/items").json()["total"] == 1


def test_ingest_stores_every_distinct_same_topic_item_flagged_or_not(tmp_path):
    """The issue's target: distinct items on one topic, into a store already full of that topic,
    with the shipped screen calibration: every one of them is in the store afterwards."""
    from mltagger.core.paths import resolve_path

    fresh = json.loads(resolve_path("data/eval/fresh.json").read_text())
    nlp = [it for it in fresh if it["tag"] == "natural-language-processing"]
    assert len(nlp) >= 60
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    tagger = Tagger(
        FakePredictor(make_model_folder(tmp_path / "model")),
        store,
        screen_file=resolve_path("data/eval/../dedup/screen.json"),
    )
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text(
        "".join(
            json.dumps({"title": it["title"], "description": it["description"]}) + "\n"
            for it in nlp[:30]
        )
    )
    second.write_text(
        "".join(
            json.dumps({"title": it["title"], "description": it["description"]}) + "\n"
            for it in nlp[30:60]
        )
    )
    a = ingest_file(tagger, first, progress=False)
    b = ingest_file(tagger, second, progress=False)
    assert a["stored"] + b["stored"] == 60 and store.count_items() == 60  # nothing lost
    titles = {it["title"] for it in store.list_items(limit=100)[0]}
    assert titles == {it["title"] for it in nlp[:60]}
    # a near copy is stored too, held; an exact copy is not stored again (it already is)
    third = tmp_path / "third.jsonl"
    copy = {"title": nlp[0]["title"] + " (repost)", "description": nlp[0]["description"]}
    third.write_text(
        json.dumps(copy)
        + "\n"
        + json.dumps({"title": nlp[1]["title"], "description": nlp[1]["description"]})
        + "\n"
    )
    c = ingest_file(tagger, third, progress=False)
    assert c["outcomes"]["stored_held_duplicate"] == 1 and c["outcomes"]["skipped_exact_copy"] == 1
    held = store.list_items(status="duplicate")[0]
    assert [h["title"] for h in held] == [copy["title"]] and held[0]["needs_review"] is True
    store.close()


def test_a_new_classifier_never_re_screens_the_store(tmp_path, monkeypatch):
    """The screen is the store's, not the model's: promoting another model loads the stored
    sketches as they are, and what counts as a duplicate stays the same."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    screen = write_screen(tmp_path / "screen.json")
    old = Tagger(FakePredictor(make_model_folder(tmp_path / "m1")), store, screen_file=screen)
    old.add([prepare(**SURE), prepare(**UNSURE)], source="test")
    before = old.analyze([prepare(**NEAR_COPY)])[1]
    calls = []
    monkeypatch.setattr(store, "set_embeddings", lambda *a, **k: calls.append(a))
    folder = make_model_folder(tmp_path / "m2")
    meta = json.loads((folder / "inference.json").read_text())
    (folder / "inference.json").write_text(json.dumps({**meta, "model_version": "fake-2"}))
    new = Tagger(FakePredictor(folder), store, screen_file=screen)
    assert new.predictor.inference.model_version == "fake-2"
    assert calls == [] and len(new.index) == 2
    assert new.analyze([prepare(**NEAR_COPY)])[1] == before
    store.close()


def test_items_sketched_by_an_older_screen_are_sketched_again_once(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    store.add_items(
        [
            {
                "title": SURE["title"],
                "description": SURE["description"],
                "content_hash": "h1",
                "tag": "computer-vision",
                "tagged_by": "model",
                "needs_review": False,
                "source": "old",
                "embedding": np.ones(16, np.float32),
                "embedding_model": "fake-1@layer6",
            }
        ]
    )
    screen = write_screen(tmp_path / "screen.json")
    tagger = Tagger(FakePredictor(make_model_folder(tmp_path / "m")), store, screen_file=screen)
    ids, vectors, _, stale = store.screen_rows("lexical-1")
    assert ids == [1] and stale == [] and vectors.shape == (1, 256)
    (dup,) = tagger.analyze([prepare(**NEAR_COPY)])[1]
    assert dup is not None and dup.item_id == 1
    store.close()


def test_a_missing_screen_calibration_is_one_clear_error(tmp_path):

    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    with pytest.raises(ConfigError, match=r"no screen calibration at .*make dedup-eval"):
        Tagger(
            FakePredictor(make_model_folder(tmp_path / "m")),
            store,
            screen_file=tmp_path / "nope.json",
        )
    store.close()


def test_two_workers_over_one_store_store_one_copy_and_see_each_others_items(store_url, tmp_path):
    """Two Taggers (as two worker processes: own engine, own index) over one store. The same
    item sent to both at once is stored once and the other answer names it as an exact copy;
    a near copy of what one stored is caught by the other's screen (its index syncs from the
    store); each write records its key."""
    import threading

    from mltagger.serving.service import SKIPPED_EXACT, STORED

    folder = make_model_folder(tmp_path / "model")
    screen = write_screen(tmp_path / "screen.json")
    stores = [Store(store_url), Store(store_url)]
    workers = [Tagger(FakePredictor(folder), s, screen_file=screen) for s in stores]
    try:
        topics = ["Lung scan segmentation", "Tram pedestrian detection", "Satellite crop maps"]
        topics += ["Handwriting recognition", "Bird species photos"]
        for topic in topics:  # several rounds: a lost race would show up in one of them
            item = prepare(topic, f"A model for {topic.lower()} with open data.")
            outs: list = [None, None]
            go = threading.Barrier(2)

            def send(k: int, item=item, outs=outs, go=go) -> None:
                go.wait()
                (outs[k],) = workers[k].add([item], source="api", written_by=f"w{k}")

            threads = [threading.Thread(target=send, args=(k,)) for k in range(2)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert sorted(o.outcome for o in outs) == sorted([STORED, SKIPPED_EXACT]), outs
            stored = next(o for o in outs if o.stored)
            copy = next(o for o in outs if not o.stored)
            assert copy.duplicate.item_id == stored.item_id and copy.duplicate.kind == "exact"
        assert stores[0].count_items() == 5
        (near,) = workers[1].add(
            [prepare("Handwriting recognition!", "A model for handwriting recognition, open data")],
            source="api",
        )
        assert near.duplicate is not None and near.duplicate.item_id is not None
        (fresh,) = workers[0].add([prepare("Forecast tram delays", "Hourly data.")], source="api")
        (seen,) = workers[1].add([prepare("Forecast tram delays!", "Hourly data")], source="api")
        assert seen.duplicate is not None and seen.duplicate.item_id == fresh.item_id
    finally:
        for s in stores:
            s.close()


def test_the_documented_nonblank_rule_is_the_cleaning_rule_for_every_code_point():
    """The title pattern in the OpenAPI document (read as ECMA-262 by clients and by
    Schemathesis, as Python `re` by the server) accepts a character exactly when the cleaned
    text still shows something: every Unicode code point (surrogates aside) is checked."""
    import re
    import sys

    from mltagger.data.text import clean_text, has_visible
    from mltagger.serving.schemas import NONBLANK

    pattern = re.compile(NONBLANK)
    assert "\\s" not in NONBLANK  # no class whose meaning differs between the two engines
    wrong = [
        hex(c)
        for c in range(sys.maxunicode + 1)
        if not 0xD800 <= c <= 0xDFFF
        and bool(pattern.search(chr(c))) != has_visible(clean_text(chr(c)))
    ]
    assert wrong == []


def test_the_document_states_every_rule_and_status(client):
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    item = schemas["ItemIn"]["properties"]
    assert item["title"]["maxLength"] == 200 and item["title"]["pattern"]
    assert item["description"]["anyOf"][0]["maxLength"] == 1000
    tags = item["author_tag"]["anyOf"][0]["enum"]
    assert tags == [
        "natural-language-processing", "computer-vision", "mlops", "reinforcement-learning",
        "graph-learning", "time-series", "other",
    ]  # fmt: skip
    batch = schemas["PredictIn"]["properties"]["items"]
    assert (batch["minItems"], batch["maxItems"]) == (1, MAX_BATCH)
    assert schemas["FeedbackIn"]["properties"]["item_id"]["maximum"] == 2**31 - 1
    ops = {(m.upper(), path): op for path, item in doc["paths"].items() for m, op in item.items()}
    for (method, path), op in ops.items():
        codes = set(op["responses"])
        assert "422" in codes or path in ("/health", "/metrics"), (method, path)
        if method == "POST":
            assert {"400", "413", "422"} <= codes, (method, path)
    assert {"401", "403", "409"} <= set(ops[("POST", "/items")]["responses"])
    assert {"401", "429"} <= set(ops[("POST", "/feedback")]["responses"])
    assert ops[("POST", "/feedback")]["security"] == [{}, {"ApiKey": []}]
    assert ops[("POST", "/review/{item_id}")]["security"] == [{"ApiKey": []}]
    links = ops[("POST", "/items")]["responses"]["201"]["links"]
    assert {v["operationId"] for v in links.values()} == {"get_item", "add_feedback", "review_item"}
    error = schemas["ErrorOut"]
    assert error["properties"]["detail"]["type"] == "string" and error["required"] == ["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/items/5105266201649362879214788804608",
        "/items/0",
        "/items/-3",
        "/review?offset=18940058907549945036800",
        "/items?offset=18940058907549945036800",
        "/items?limit=0",
    ],
)
def test_out_of_range_integers_get_422_never_500(client, path):
    r = client.get(path, headers=H)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] and isinstance(r.json()["errors"], list)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"tag": "mlops", "duplicate": 0}, "duplicate"),  # 0 is not false
        ({"tag": "mlops", "reviewer": 7}, "reviewer"),
    ],
)
def test_request_bodies_are_strict(client, body, where):
    add(client, UNSURE)
    r = client.post("/review/1", json=body, headers=H)
    assert r.status_code == 422 and where in r.json()["detail"], r.text
    fb = client.post("/feedback", json={"item_id": "1", "correct_tag": "mlops"})
    assert fb.status_code == 422 and "item_id" in fb.json()["detail"]
    ok = client.post("/feedback", json={"item_id": 1.0, "correct_tag": "mlops"})
    assert ok.status_code == 201 and ok.json()["item_id"] == 1  # 1.0 is an integer in JSON Schema


def test_a_model_with_a_gate_answers_out_of_scope_items_with_other_applied(tmp_path):
    """The gate's answer travels the whole way: /predict, the stored item, the review queue
    (a person decides every stopped item) and the review page's reason."""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    tagger = Tagger(
        FakePredictor(make_model_folder(tmp_path / "model", threshold=0.0, gate_threshold=0.5)),
        store,
        screen_file=write_screen(tmp_path / "screen.json"),
    )
    cfg = compose_config("serve", [f"model_dir={tmp_path / 'model'}", f"api_key={KEY}"])
    spam = {"title": "Claim free crypto airdrop tokens", "description": "Cheap flights too."}
    with TestClient(create_app(tagger, cfg)) as c:
        got = c.post("/predict", json={"items": [spam, SURE]}).json()["items"]
        assert [p["reason"] for p in got] == ["out_of_scope", "classifier"]
        assert got[0]["tag"] == "other" and got[0]["needs_review"] is True
        assert 0 <= got[0]["in_scope"] < 0.5 < got[1]["in_scope"]
        enum = c.get("/openapi.json").json()["components"]["schemas"]["PredictionOut"]
        assert enum["properties"]["reason"]["enum"] == [
            "classifier", "low_confidence", "out_of_scope",
        ]  # fmt: skip
        item = add(c, spam)
        assert (item["tag"], item["reason"]) == ("other", "out_of_scope")
        queue = c.get("/review", headers=H).json()["items"]
        assert [it["id"] for it in queue] == [item["id"]]  # waiting for a person
        from types import SimpleNamespace

        from mltagger.serving.pages.queue import item_details

        ui = SimpleNamespace(store=store, shared=SimpleNamespace(tagger=tagger))
        shown = item_details(ui, store.get_item(item["id"]))
        assert any("out-of-scope gate" in r for r in shown["reasons"])
    store.close()
