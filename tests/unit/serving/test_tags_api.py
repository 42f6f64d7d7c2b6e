"""The tag list endpoints through FastAPI's test client: admins only, each change under the
key's name, the bad-input answers (409, 422, 404: one line, nothing changed), and the service
answering throughout with the serving model's own labels."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from mltagger.core.config import compose_config
from mltagger.serving.api import create_app
from mltagger.serving.keys import create_key
from mltagger.serving.tag_proposals import add_proposals
from tests.conftest import TAGS
from tests.unit.serving.test_tag_list import PROPOSAL

KEY = "unit-admin-key"
H = {"X-API-Key": KEY}


@pytest.fixture
def client(tagger, tmp_path):
    cfg = compose_config("serve", [f"model_dir={tmp_path / 'model'}", f"api_key={KEY}"])
    with TestClient(create_app(tagger, cfg)) as c:
        yield c


def test_admins_only(client, tagger):
    _, review = create_key(tagger.store.engine, "ana", "review")
    assert client.get("/tags").status_code == 401
    for method, path in [("get", "/tags"), ("post", "/tags/mlops/retire"),
                         ("delete", "/tags/mlops"), ("get", "/tags/history")]:  # fmt: skip
        r = client.request(method, path, headers={"X-API-Key": review})
        assert r.status_code == 403, path
    assert (
        client.post("/tags", json={"name": "audio"}, headers={"X-API-Key": review}).status_code
        == 403
    )
    assert "audio" not in {t["name"] for t in client.get("/tags", headers=H).json()["tags"]}


def test_add_retire_remove_with_the_keys_name(client):
    r = client.post("/tags", json={"name": "audio", "description": "sound"}, headers=H)
    assert r.status_code == 201 and r.json()["status"] == "pending"
    assert r.json()["created_by"] == "config"  # the serve config's admin key
    assert client.post("/tags/time-series/retire", headers=H).json()["status"] == "retiring"
    assert client.delete("/tags/audio", headers=H).json() == {
        "name": "audio", "removed": True, "status": "pending"
    }  # fmt: skip
    listed = client.get("/tags", headers=H).json()
    assert listed["serving_labels"] == TAGS and listed["serving_model"] == "fake-1"
    assert {t["name"]: t["status"] for t in listed["tags"]}["time-series"] == "retiring"
    events = client.get("/tags/history", params={"limit": 3}, headers=H).json()["events"]
    assert [(e["tag"], e["action"], e["actor"]) for e in events] == [
        ("audio", "remove", "config"), ("time-series", "retiring", "config"),
        ("audio", "add", "config"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "method, path, body, status, words",
    [
        ("post", "/tags", {"name": "mlops"}, 409, "already in the list"),
        ("delete", "/tags/mlops", None, 409, "answered by the serving model fake-1"),
        ("post", "/tags", {"name": "Not Kebab"}, 422, "name"),
        ("post", "/tags", {"name": "x" * 41}, 422, "name"),
        ("post", "/tags/nope/retire", None, 404, "no tag 'nope'"),
        ("delete", "/tags/nope", None, 404, "no tag 'nope'"),
        ("post", "/tags/other/retire", None, 409, "fallback"),
        ("post", "/tags/proposals/99/accept", None, 404, "no tag proposal"),
    ],
)
def test_bad_changes_change_nothing(client, method, path, body, status, words):
    before = client.get("/tags/history", headers=H).json()
    r = client.request(method, path, json=body, headers=H)
    assert r.status_code == status and words in r.json()["detail"]
    assert "\n" not in r.json()["detail"]
    assert client.get("/tags/history", headers=H).json() == before


def test_a_proposal_is_one_click_and_the_service_keeps_its_labels(client, tagger):
    [pid] = add_proposals(tagger.store.engine, [PROPOSAL])
    assert client.get("/tags/proposals", headers=H).json()["proposals"][0]["id"] == pid
    r = client.post(f"/tags/proposals/{pid}/accept", headers=H)
    assert r.status_code == 200 and r.json()["status"] == "pending"
    assert client.get("/tags/proposals", headers=H).json()["proposals"] == []
    # pending: not answered until a promoted model answers it
    answer = client.post("/predict", json={"items": [{"title": "A recommender system"}]})
    assert answer.status_code == 200
    assert answer.json()["items"][0]["tag"] in TAGS
