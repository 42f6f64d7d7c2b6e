"""The service's rules on a predictor whose answers are known (tests/fakes.py) and a real SQLite
file, through FastAPI's test client: who may write, what reaches the review queue, bounds, and
what the batch job counts. Fast enough for mutation testing (`make mutation`)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from mltagger.cli import compose_config
from mltagger.ingest import ingest_file
from mltagger.serve import create_app
from mltagger.service import Tagger, prepare
from mltagger.store import Store
from tests.fakes import FakePredictor, make_model_folder

KEY = "unit-key"
MAX_BATCH = 4
MAX_BODY = 4000

SURE = {"title": "Image segmentation", "description": "U-Net on scans."}  # auto-tagged CV
UNSURE = {"title": "Nothing to go on", "description": "No words it knows."}  # to review


@pytest.fixture
def tagger(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    yield Tagger(FakePredictor(make_model_folder(tmp_path / "model")), store, near_threshold=0.99)
    store.close()


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
    queue = client.get("/review").json()
    assert [it["id"] for it in queue["items"]] == [unsure["id"]] and queue["total"] == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/items", SURE),
        ("POST", "/feedback", {"item_id": 1, "correct_tag": "mlops"}),
        ("POST", "/review/1", {"tag": "mlops"}),
    ],
)
@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_every_write_needs_the_api_key(client, method, path, body, key):
    item = add(client, UNSURE)
    assert item["id"] == 1
    headers = {} if key is None else {"X-API-Key": key}
    r = client.request(method, path, json=body, headers=headers)
    assert r.status_code == 401, r.text
    assert "X-API-Key" in r.json()["detail"]
    # Nothing changed: one item, no feedback, still waiting for review with the model's tag.
    got = client.get("/items/1").json()
    assert got["feedback"] == [] and got["needs_review"] is True and got["tag"] == "other"
    assert got["tagged_by"] == "model" and client.get("/review").json()["total"] == 1


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
    assert client.get("/review").json()["total"] == 0
    bad = client.post(f"/review/{item['id']}", json={"tag": "robotics"}, headers={"X-API-Key": KEY})
    assert bad.status_code == 422 and "unknown tag 'robotics'" in bad.json()["detail"]
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
    assert r.status_code == 422 and "unknown tag 'robotics'" in r.json()["detail"]
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
    assert over.status_code == 413 and f"max {MAX_BATCH}" in over.json()["detail"]


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


def test_ingest_counts_what_it_stored_and_queues_the_unsure_items(tagger, tmp_path):
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
    assert s["duplicates_skipped"] == 1 and s["duplicates_by_kind"] == {"exact_skipped": 1}
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
