"""After release: author tags, the audit sample, a shadow or canary candidate, and the monitor's
figures on /metrics, through the real service on a predictor whose answers are known."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mltagger.core.config import compose_config
from mltagger.models.modelio import read_model_metadata, write_model_metadata
from mltagger.serving.api import create_app
from mltagger.serving.ingest import ingest_file
from mltagger.serving.rollout import Rollout, RolloutError
from mltagger.serving.server import build_tagger
from mltagger.serving.service import Tagger, prepare
from mltagger.serving.store import Store
from tests.fakes import FakePredictor, ReadsImagesAsText, make_model_folder, write_screen

KEY = "unit-key"
SURE = {"title": "Image segmentation", "description": "U-Net on scans."}


def model(folder, version):
    make_model_folder(folder)
    labels, inference = read_model_metadata(folder)
    write_model_metadata(folder, labels, replace(inference, model_version=version))
    return folder


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'store.db'}")
    yield s
    s.close()


def tagger(tmp_path, store, **kw):
    return Tagger(
        FakePredictor(model(tmp_path / "current", "current")),
        store,
        screen_file=write_screen(tmp_path / "screen.json"),
        **kw,
    )


def client(t, tmp_path):
    cfg = compose_config("serve", [f"model_dir={tmp_path / 'current'}", f"api_key={KEY}"])
    return TestClient(create_app(t, cfg))


def items(n):
    return [prepare(f"Image segmentation number {i}", f"U-Net variant {i} on scans.") for i in
            range(n)]  # fmt: skip


def test_an_author_tag_is_stored_beside_the_models_and_an_unknown_one_is_422(tmp_path, store):
    with client(tagger(tmp_path, store), tmp_path) as c:
        r = c.post("/items", json={**SURE, "author_tag": "mlops"}, headers={"X-API-Key": KEY})
        assert r.status_code == 201, r.text
        item = r.json()["item"]
        assert (item["author_tag"], item["model_tag"], item["tag"]) == (
            "mlops", "computer-vision", "computer-vision",
        )  # fmt: skip
        bad = c.post("/items", json={"title": "x", "author_tag": "ml"}, headers={"X-API-Key": KEY})
        assert bad.status_code == 422
        assert "author_tag: Input should be 'natural-language-processing'" in bad.json()["detail"]
        assert store.count_items() == 1


def test_ingest_takes_the_author_tag_from_author_tag_or_tag(tmp_path, store):
    drop = tmp_path / "drop.jsonl"
    rows = [{**SURE, "tag": "computer-vision"},
            {"title": "Forecast demand", "description": "x", "author_tag": "time-series"},
            {"title": "Text", "description": "y", "author_tag": "nope"}]  # fmt: skip
    drop.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = ingest_file(tagger(tmp_path, store), drop, progress=False)
    assert (s["stored"], s["rejected"]) == (2, 1)
    assert [r["author_tag"] for r in store.monitor_rows()] == ["computer-vision", "time-series"]


def test_audited_items_keep_their_tag_and_wait_for_a_person(tmp_path, store):
    t = tagger(tmp_path, store, audit_share=1.0)
    outs = t.add([prepare(**SURE), prepare("Nothing to go on", "No words it knows.")], source="t")
    audited = store.get_item(outs[0].item_id)
    assert audited["audit"] and audited["needs_review"] and audited["tag"] == "computer-vision"
    assert outs[0].prediction["needs_review"] is False  # the caller is told the model was sure
    unsure = store.get_item(outs[1].item_id)
    assert not unsure["audit"]  # only auto-applied tags are audited
    assert store.review_backlog()["waiting"] == 2


def test_shadow_stores_the_candidates_answer_and_canary_lets_it_tag_its_share(tmp_path, store):
    cand = ReadsImagesAsText(model(tmp_path / "cand", "cand"))
    t = tagger(tmp_path, store, candidate=cand, rollout=Rollout.parse("shadow"))
    outs = t.add(items(40), source="t")
    t.wait_for_shadow()  # the candidate scores off the request path
    rows = [store.get_item(o.item_id) for o in outs]
    assert {r["model_version"] for r in rows} == {"current"}
    assert all(r["shadow"]["tag"] == "natural-language-processing" for r in rows)
    t.candidate, t.rollout = cand, Rollout.parse("canary:50")
    outs = t.add(items(80)[40:], source="t")
    t.wait_for_shadow()
    rows = [store.get_item(o.item_id) for o in outs]
    by = {r["model_version"] for r in rows}
    assert by == {"current", "cand"}
    for r in rows:  # the other model's answer is kept, and the shown one is the named model's
        expected = (
            "natural-language-processing" if r["model_version"] == "cand" else "computer-vision"
        )
        assert r["tag"] == expected and r["shadow"]["model_version"] != r["model_version"]
    share = sum(r["model_version"] == "cand" for r in rows) / len(rows)
    assert 0.25 < share < 0.75


def test_a_candidate_with_other_labels_stops_the_service_before_it_starts(tmp_path):
    model(tmp_path / "current", "current")
    other = model(tmp_path / "other", "other")
    labels, inference = read_model_metadata(other)
    write_model_metadata(other, list(reversed(labels)), inference)
    cfg = compose_config(
        "serve",
        [f"model_dir={tmp_path / 'current'}", f"candidate={other}", "rollout=canary:5",
         f"store.url=sqlite:///{tmp_path / 's.db'}"],
    )  # fmt: skip
    with pytest.raises(RolloutError, match="same tags"):
        build_tagger(cfg)


def test_metrics_export_the_latest_monitor_snapshot_and_the_backlog(tmp_path, store):
    t = tagger(tmp_path, store)
    with client(t, tmp_path) as c:
        before = c.get("/metrics").text
        assert "mltagger_monitor_snapshot_age_seconds -1.0" in before
        store.save_snapshot(
            {
                "online": [{"signal": "audit", "model_version": "current", "tag": "all", "n": 40,
                            "correct": 36, "precision": 0.9, "ci_low": 0.77, "ci_high": 0.96}],
                "review_ratio": 0.25,
                "drift": {"pvalues": {"embedding": 0.001}, "alarm": True, "fired": ["embedding"]},
            }
        )  # fmt: skip
        text = c.get("/metrics").text
    assert 'mltagger_online_precision{model_version="current",signal="audit",tag="all"} 0.9' in text
    assert (
        'mltagger_online_precision_lower{model_version="current",signal="audit",tag="all"} 0.77'
        in text
    )
    assert 'mltagger_drift_pvalue{test="embedding"} 0.001' in text
    assert "mltagger_drift_alarm 1.0" in text and "mltagger_window_review_ratio 0.25" in text
    assert "mltagger_review_backlog_items 0.0" in text


def test_the_served_model_follows_its_link_after_a_promote(tmp_path, store):
    from mltagger.serving import service
    from mltagger.serving.rollout import promote

    model(tmp_path / "runs" / "a", "a")
    model(tmp_path / "runs" / "b", "b")
    link = tmp_path / "export"
    link.symlink_to("runs/a")
    t = Tagger(FakePredictor(link), store, dedup=False, model_link=link, loader=FakePredictor)
    assert t.analyze(items(1))[0][0]["model_version"] == "a"
    promote(link, tmp_path / "runs" / "b")
    t._checked -= service.RELOAD_SECONDS  # as if the reload interval had passed
    assert t.analyze(items(1))[0][0]["model_version"] == "b"
    assert np.isfinite(t.health()["audit_share"])


def test_a_promote_recorded_in_the_store_reaches_every_worker(tmp_path, store):
    """Two workers over one store, neither reading a link: the deployment row moves both, a
    rollback row moves them back, and a row naming a folder this machine lacks is ignored."""
    from mltagger.serving import service
    from mltagger.serving.rollout import deployed, record_deployment

    a, b = model(tmp_path / "runs" / "a", "a"), model(tmp_path / "runs" / "b", "b")
    workers = [Tagger(FakePredictor(a), store, dedup=False, loader=FakePredictor) for _ in range(2)]
    assert deployed(store.engine) is None
    assert [w.analyze(items(1))[0][0]["model_version"] for w in workers] == ["a", "a"]
    row = record_deployment(store.engine, b, "promote")
    assert (row["model_version"], row["action"]) == ("b", "promote")
    for w in workers:
        w._checked -= service.RELOAD_SECONDS
    assert [w.analyze(items(1))[0][0]["model_version"] for w in workers] == ["b", "b"]
    record_deployment(store.engine, a, "rollback")
    for w in workers:
        w._checked -= service.RELOAD_SECONDS
    assert [w.analyze(items(1))[0][0]["model_version"] for w in workers] == ["a", "a"]
    gone = model(tmp_path / "runs" / "c", "c")
    record_deployment(store.engine, gone, "promote")
    shutil.rmtree(gone)
    assert deployed(store.engine) is None


def test_metrics_export_the_cycle_state(tmp_path, store):
    from mltagger.serving.cycles import new_cycle, set_paused, update_cycle

    t = tagger(tmp_path, store)
    with client(t, tmp_path) as c:
        text = c.get("/metrics").text
        assert "mltagger_cycle_gate_tripped 0.0" in text and "mltagger_cycle_paused 0.0" in text
        cyc = new_cycle(store.engine, str(tmp_path / "c"), "/m")
        update_cycle(store.engine, cyc["id"], status="closed", outcome="rolled_back", report={})
        set_paused(store.engine, True, "ana", "x")
        text = c.get("/metrics").text
    assert "mltagger_cycle_gate_tripped 1.0" in text and "mltagger_cycle_paused 1.0" in text


def test_every_worker_follows_the_store_rollout_rows(tmp_path, store):
    """The cycle moves a candidate from shadow to canary to nothing through the store; a worker
    picks each row up without a restart, and a candidate that cannot load is not run."""
    from mltagger.serving.cycles import set_rollout

    t = tagger(tmp_path, store)
    loaded = []

    def loader(path):
        loaded.append(Path(path))
        return FakePredictor(path)

    t.loader = loader
    good = tmp_path / "cand"
    shutil.copytree(t.predictor.folder, good)
    set_rollout(store.engine, str(good), "shadow")
    t.reload_now()
    assert t.candidate is not None and t.rollout.mode == "shadow"
    set_rollout(store.engine, str(good), "canary", 30)
    t.reload_now()
    assert t.rollout.mode == "canary" and t.rollout.percent == 30 and len(loaded) == 1
    set_rollout(store.engine, str(tmp_path / "missing"), "shadow")
    t.reload_now()
    assert t.candidate is None  # logged, not run
    set_rollout(store.engine, None, "off")
    t.reload_now()
    assert t.candidate is None
