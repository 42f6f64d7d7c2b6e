"""Secondary tags through the service (issue 35): /predict and /items answer `tags`, the store
keeps them, a review sets or clears them, and `dataset build` turns a person's (never a
model's) into the next training set's `also`."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from mltagger.core.config import compose_config
from mltagger.models.secondary import SecondaryHead
from mltagger.serving import dataset
from mltagger.serving.api import create_app
from mltagger.serving.service import Tagger
from mltagger.serving.store import Store
from tests.fakes import LABELS, FakePredictor, make_model_folder, write_screen

KEY = "unit-key"
H = {"X-API-Key": KEY}
# FakePredictor: one keyword -> 0.90 for its tag and ~0.0167 for each other one
SURE = {"title": "Image segmentation", "description": "U-Net on scans."}
UNSURE = {"title": "Nothing to go on", "description": "No words it knows."}


@pytest.fixture
def client(tmp_path):
    folder = make_model_folder(tmp_path / "model")
    # applies every topic above 0.015 beside an applied tag (two at most): known answers
    SecondaryHead(labels=list(LABELS), apply_threshold=0.015, suggest_threshold=0.01).save(folder)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    tagger = Tagger(FakePredictor(folder), store, screen_file=write_screen(tmp_path / "s.json"))
    cfg = compose_config("serve", [f"model_dir={folder}", f"api_key={KEY}"])
    with TestClient(create_app(tagger, cfg)) as c:
        yield c
    store.close()


def test_predict_and_items_answer_the_primary_first_then_secondary_topics(client):
    sure, unsure = client.post("/predict", json={"items": [SURE, UNSURE]}).json()["items"]
    assert sure["tags"][0] == {"tag": "computer-vision", "confidence": sure["confidence"],
                               "primary": True}  # fmt: skip
    second = [t for t in sure["tags"] if not t["primary"]]
    assert len(second) == 2 and all(t["tag"] not in ("computer-vision", "other") for t in second)
    assert [t["primary"] for t in unsure["tags"]] == [True]  # nothing beside a review item
    stored = client.post("/items", json=SURE, headers=H).json()["item"]
    assert stored["secondary_tags"] == [t["tag"] for t in second]


def test_a_review_sets_keeps_or_clears_secondary_tags_and_refuses_unknown_ones(client):
    item = client.post("/items", json=UNSURE, headers=H).json()["item"]
    assert item["secondary_tags"] is None
    r = client.post(f"/review/{item['id']}", headers=H,
                    json={"tag": "mlops", "secondary_tags": ["natural-language-processing",
                                                             "mlops"]})  # fmt: skip
    assert r.status_code == 200 and r.json()["secondary_tags"] == ["natural-language-processing"]
    kept = client.post(f"/review/{item['id']}", json={"tag": "mlops"}, headers=H).json()
    assert kept["secondary_tags"] == ["natural-language-processing"]
    flipped = client.post(f"/review/{item['id']}", json={"tag": "natural-language-processing"},
                          headers=H).json()  # fmt: skip
    assert flipped["secondary_tags"] is None  # the new tag is no longer secondary
    bad = client.post(f"/review/{item['id']}", json={"tag": "mlops", "secondary_tags": ["x"]},
                      headers=H)  # fmt: skip
    assert bad.status_code == 422 and "secondary_tags" in bad.json()["detail"]
    cleared = client.post(f"/review/{item['id']}", headers=H,
                          json={"tag": "mlops", "secondary_tags": []}).json()  # fmt: skip
    assert cleared["secondary_tags"] is None


def test_dataset_build_takes_a_persons_secondary_tags_never_a_models(client, tmp_path):
    auto = client.post("/items", json=SURE, headers=H).json()["item"]
    assert auto["secondary_tags"]  # the model's: not a label
    client.post("/feedback", json={"item_id": auto["id"], "correct_tag": "mlops"})
    queued = client.post("/items", json=UNSURE, headers=H).json()["item"]
    client.post(f"/review/{queued['id']}", headers=H,
                json={"tag": "mlops", "secondary_tags": ["time-series"]})  # fmt: skip
    cfg = compose_config("train", [])
    url = f"sqlite:///{tmp_path / 'store.db'}"
    out = dataset.build(url, cfg.data, cfg.paths.root_dir, out_dir=tmp_path / "fb",
                        config_dir=tmp_path / "conf")  # fmt: skip
    rows = {r["store_id"]: r for r in json.loads((tmp_path / "fb" / "v1.json").read_text())}
    assert (rows[queued["id"]]["also"], rows[queued["id"]]["secondary_tags"]) == (
        "time-series", ["time-series"])  # fmt: skip
    assert (rows[auto["id"]]["also"], rows[auto["id"]]["label_source"]) == ("", "feedback")
    assert out


def test_a_report_names_secondary_tags_and_they_become_the_rows_also(client, tmp_path):
    item = client.post("/items", json=SURE, headers=H).json()["item"]
    r = client.post("/feedback", json={"item_id": item["id"], "correct_tag": "mlops",
                                      "secondary_tags": ["mlops", "time-series"]})  # fmt: skip
    assert r.status_code == 201 and r.json()["secondary_tags"] == ["time-series"]
    bad = client.post("/feedback", json={"item_id": item["id"], "correct_tag": "mlops",
                                        "secondary_tags": ["quantum"]})  # fmt: skip
    assert bad.status_code == 422
    cfg = compose_config("train", [])
    dataset.build(f"sqlite:///{tmp_path / 'store.db'}", cfg.data, cfg.paths.root_dir,
                  out_dir=tmp_path / "fb", config_dir=tmp_path / "conf")  # fmt: skip
    (row,) = json.loads((tmp_path / "fb" / "v1.json").read_text())
    assert (row["tag"], row["also"], row["label_source"]) == ("mlops", "time-series", "feedback")
