"""`GET /items/{id}/why` on the known-answer predictor (tests/fakes.py: a tag's keyword decides
it) and a real SQLite store: the keyword is the top word, the neighbours are the model's own
training items (rebuilt from the run's data config), a key of role review is needed, an unknown
id is 404, answers are cached per model version and rate limited per key."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient
from omegaconf import OmegaConf

from mltagger.core.config import compose_config
from mltagger.data.prepare import prepare_data
from mltagger.serving.api import create_app
from mltagger.serving.keys import create_key
from mltagger.serving.service import Tagger, prepare
from mltagger.serving.store import Store
from mltagger.serving.why import Explainer, highlight
from tests.fakes import FakePredictor, make_model_folder, write_screen

KEY = "unit-key"
H = {"X-API-Key": KEY}
ITEM = {"title": "Image segmentation of street scenes", "description": "U-Net on city photos."}


@pytest.fixture
def why_client(tmp_path, data_cfg):
    """A service whose model folder names a training run over the tiny items."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({"data": data_cfg})))
    folder = make_model_folder(tmp_path / "model")
    info = json.loads((folder / "inference.json").read_text())
    sha = prepare_data(data_cfg).data_sha256
    info["extra"] |= {"run_dir": str(run), "data_sha256": sha}
    (folder / "inference.json").write_text(json.dumps(info))
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    tagger = Tagger(FakePredictor(folder), store, screen_file=write_screen(tmp_path / "s.json"))
    cfg = compose_config(
        "serve",
        [f"model_dir={folder}", f"api_key={KEY}", "limits.public_per_minute=60",
         "limits.public_burst=3"],
    )  # fmt: skip
    with TestClient(create_app(tagger, cfg)) as c:
        yield c
    store.close()


def test_the_keyword_is_the_top_word_and_the_neighbours_are_training_items(why_client, data_cfg):
    item = why_client.post("/items", json=ITEM, headers=H).json()["item"]
    r = why_client.get(f"/items/{item['id']}/why", headers=H)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["tag"] == "computer-vision" and got["item_tag"] == "computer-vision"
    assert got["words"][0]["word"] == "image" and got["words"][0]["importance"] > 0.5
    assert all(w["importance"] < 0.01 for w in got["words"][1:])
    assert got["model_version"] == got["stored_by"] == "fake-1" and got["note"] is None
    train = {it["id"]: it for it in prepare_data(data_cfg).splits["train"]}
    assert len(got["neighbours"]) == 3 and got["neighbours_note"] is None
    for n in got["neighbours"]:
        assert train[n["id"]]["title"] == n["title"] and train[n["id"]]["tag"] == n["tag"]
    sims = [n["similarity"] for n in got["neighbours"]]
    assert sims == sorted(sims, reverse=True)


def test_an_item_stored_by_another_model_says_which_model_is_explained(why_client):
    item = why_client.post("/items", json=ITEM, headers=H).json()["item"]
    store = why_client.app.state.tagger.store
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE items SET model_version = 'old-0' WHERE id = ?", (item["id"],))
    got = why_client.get(f"/items/{item['id']}/why", headers=H).json()
    assert got["stored_by"] == "old-0" and got["model_version"] == "fake-1"
    assert "old-0" in got["note"] and "fake-1" in got["note"]


def test_unknown_id_is_404_and_the_endpoint_needs_a_review_key(why_client):
    r = why_client.get("/items/999/why", headers=H)
    assert r.status_code == 404 and r.json()["detail"] == "no item with id 999"
    assert why_client.get("/items/999/why").status_code == 401
    _, ingest = create_key(why_client.app.state.tagger.store.engine, "crawler", "ingest")
    r = why_client.get("/items/999/why", headers={"X-API-Key": ingest})
    assert r.status_code == 403 and "not review" in r.json()["detail"]


def test_answers_are_cached_per_model_version_and_rate_limited_per_key(why_client):
    item = why_client.post("/items", json=ITEM, headers=H).json()["item"]
    why = why_client.app.state.shared.why
    first = why_client.get(f"/items/{item['id']}/why", headers=H).json()
    assert (item["id"], "fake-1") in why._cache
    assert why_client.get(f"/items/{item['id']}/why", headers=H).json() == first
    assert why_client.get(f"/items/{item['id']}/why", headers=H).status_code == 200
    r = why_client.get(f"/items/{item['id']}/why", headers=H)  # the burst of 3 is spent
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1


def test_a_model_folder_without_its_training_run_says_so(tagger, tmp_path):
    got = tagger_why(tagger)
    assert got["neighbours"] == [] and "extra.run_dir" in got["neighbours_note"]


def tagger_why(tagger: Tagger) -> dict:
    (out,) = tagger.add([prepare(**ITEM)], source="test")
    return Explainer(60, 5).why(tagger.predictor, tagger.store.get_item(out.item_id))


def test_highlight_marks_every_occurrence_of_the_top_words():
    assert highlight("Graph nets, graph-free GRAPH.", {"graph"}) == [
        ("Graph", True), (" nets, graph-free ", False), ("GRAPH", True), (".", False),
    ]  # fmt: skip


def test_the_review_card_highlights_the_top_word_and_says_why(tagger, tmp_path):
    """An item the model is unsure of (two keywords) waits for review; its card marks the
    keyword of the tag it explains, not the one that speaks against it (its removal raises the
    tag's probability). This model folder names no training
    run, and the card says there are no neighbours and why."""
    from tests.unit.serving.test_web import add, browser, log_in, make_app

    add(tagger, {"title": "Deploy an image model", "description": "Serving <b>photos</b>."})
    _, review = create_key(tagger.store.engine, "ana", "review")
    c = browser(make_app(tagger, tmp_path))
    page = log_in(c, review)
    assert page.status_code == 200
    assert "Deploy an <mark>image</mark> model" in page.text
    assert re.search(r"image -\d+\.\d</span>", page.text)
    assert re.search(r"deploy \+\d+\.\d</span>", page.text)
    assert "Why the model says" in page.text and "extra.run_dir" in page.text
    assert "<b>photos</b>" not in page.text  # the description is still escaped
