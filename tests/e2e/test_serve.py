"""The product loop end to end on the tiny exported model: a real uvicorn server on 127.0.0.1,
a real SQLite file, the ingest command, feedback into the next training file, a kill mid-way
through a stream of writes, and the locust load test (a few seconds)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from mltagger.serving.store import Store
from tests.conftest import REPO, TAGS, run_job, split_by_confidence

KEY = "test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def export_folder(exported) -> Path:
    return exported[0] / "export" / "models" / "teacher-int8"


def serve_overrides(folder: Path, db: Path, *extra: str) -> list[str]:
    return [
        f"model_dir={folder}",
        f"store.url=sqlite:///{db}",
        f"api_key={KEY}",
        "limits.max_batch=8",
        "limits.max_title_chars=200",
        "limits.max_description_chars=1000",
        "limits.max_body_bytes=20000",
        *extra,
    ]


class Client:
    """A keep-alive-free HTTP client for 127.0.0.1, bounded by a timeout per request."""

    def __init__(self, port: int) -> None:
        self.port = port

    def call(
        self, method: str, path: str, body=None, key: str | None = KEY, raw: bytes | None = None
    ):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        headers = {"Content-Type": "application/json"}
        if key:
            headers["X-API-Key"] = key
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        try:
            conn.request(method, path, data, headers)
            resp = conn.getresponse()
            text = resp.read().decode()
        finally:
            conn.close()
        try:
            return resp.status, json.loads(text)
        except json.JSONDecodeError:
            return resp.status, text


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    """The app from conf/serve.yaml on a free loopback port, in a thread of this process."""
    tmp = tmp_path_factory.mktemp("serve")
    # The shipped duplicate screen (data/dedup/screen.json), as `make serve` runs it.
    with serving(serve_overrides(export_folder(exported), tmp / "store.db")) as (port, tagger):
        yield Client(port), tagger


@contextmanager
def serving(overrides: list[str]):
    """The serve config's app on uvicorn in a thread of this process: (port, tagger)."""
    from mltagger.core.config import compose_config
    from mltagger.serving.api import create_app
    from mltagger.serving.server import build_tagger

    cfg = compose_config("serve", overrides)
    tagger = build_tagger(cfg)
    try:
        with on_uvicorn(create_app(tagger, cfg), cfg) as port:
            yield port, tagger
    finally:
        tagger.store.close()


@contextmanager
def on_uvicorn(app, cfg=None):
    """An ASGI app on uvicorn in a thread of this process, on a free loopback port, with the
    serve config's server settings (proxies, timeouts), as `mltagger serve` runs it: the port."""
    import uvicorn

    from mltagger.core.config import compose_config
    from mltagger.serving.connections import ServeConfig, server_options

    options = server_options(cfg if cfg is not None else compose_config("serve", []))
    port = free_port()
    config = ServeConfig(app, host="127.0.0.1", port=port, log_level="error", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_predict_answers_approved_tags_with_scores_and_batch_duplicates(server):
    client, tagger = server
    # words no other test of this shared server stores, so only the batch itself can match
    items = [
        {"title": "Pedestrian detection on trams", "description": "Real-time detection."},
        {"title": "PEDESTRIAN DETECTION ON TRAMS", "description": "real time detection"},
        {"title": "Forecast bakery sales with an LSTM", "description": ""},
    ]
    status, body = client.call("POST", "/predict", {"items": items}, key=None)  # no key needed
    assert status == 200, body
    out = body["items"]
    assert len(out) == 3
    for p in out:
        assert p["tag"] in TAGS and set(p["scores"]) <= set(TAGS)
        assert sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-4)
        assert p["model_version"] == tagger.predictor.inference.model_version
        assert isinstance(p["needs_review"], bool)
    assert out[0]["duplicate"] is None
    assert out[1]["duplicate"] == {
        "kind": "exact",
        "similarity": 1.0,
        "batch_index": 0,
        "how": "text",
    }


def test_items_are_stored_and_an_exact_copy_is_refused_with_the_original_id(server):
    client, _ = server
    item = {"title": "Graph attention networks", "description": "GAT layers.", "url": "https://x"}
    status, body = client.call("POST", "/items", item)
    assert status == 201, body
    stored = body["item"]
    assert stored["tag"] in TAGS and stored["tagged_by"] == "model" and stored["url"] == "https://x"
    status, again = client.call("POST", "/items", {**item, "title": "graph attention networks!"})
    assert status == 409
    assert again["duplicate_of"] == stored["id"] and again["kind"] == "exact"
    status, got = client.call("GET", f"/items/{stored['id']}")
    assert status == 200 and got["title"] == item["title"] and got["feedback"] == []
    assert client.call("GET", "/items/987654")[0] == 404
    assert client.call("POST", "/items", item, key=None)[0] == 401
    assert client.call("POST", "/items", item, key="wrong")[0] == 401


def test_feedback_is_stored_and_sends_the_item_to_review(server):
    client, _ = server
    _, body = client.call("POST", "/items", {"title": "Proximal policy optimization agents"})
    item_id = body["item"]["id"]
    report = {"item_id": item_id, "correct_tag": "reinforcement-learning", "comment": "RL 🙂"}
    status, fb = client.call("POST", "/feedback", report)
    assert status == 201 and fb["item_id"] == item_id and fb["comment"] == "RL 🙂"
    _, item = client.call("GET", f"/items/{item_id}")
    assert (
        item["needs_review"] is True and item["feedback"][0]["correct_tag"] == report["correct_tag"]
    )
    _, queue = client.call("GET", "/review?limit=500")
    assert item_id in [it["id"] for it in queue["items"]]
    # Clear 4xx for the user's mistakes.
    assert client.call("POST", "/feedback", {**report, "item_id": 424242})[0] == 404
    status, bad_tag = client.call("POST", "/feedback", {**report, "correct_tag": "robotics"})
    assert status == 422 and "correct_tag: Input should be" in bad_tag["detail"]
    assert client.call("POST", "/feedback", raw=b"")[0] == 422
    assert client.call("POST", "/feedback", report, key="wrong")[0] == 401
    _, after = client.call("GET", f"/items/{item_id}")
    assert after["feedback"] == item["feedback"]  # refused reports left nothing behind
    # A reader may report without a key (public, rate limited): recorded as such.
    status, public = client.call("POST", "/feedback", report, key=None)
    assert status == 201 and public["written_by"] == "public"
    # Only a key holder may settle it.
    for key in (None, "wrong"):
        status, _ = client.call("POST", f"/review/{item_id}", {"tag": "mlops"}, key=key)
        assert status == 401
    _, still = client.call("GET", f"/items/{item_id}")
    assert still["tagged_by"] == "model" and still["needs_review"] is True
    # A person settles it in review.
    status, reviewed = client.call(
        "POST", f"/review/{item_id}", {"tag": "reinforcement-learning", "reviewer": "ana"}
    )
    assert status == 200 and reviewed["tagged_by"] == "human" and not reviewed["needs_review"]


@pytest.mark.parametrize(
    ("name", "raw", "status", "message"),
    [
        ("malformed JSON", b'{"items": [{"title": ', 422, "malformed JSON"),
        ("missing items", b"{}", 422, "items: Field required"),
        ("missing title", b'{"items": [{"description": "x"}]}', 422, "items.0.title"),
        ("wrong type", b'{"items": [{"title": 123}]}', 422, "items.0.title"),
        ("items not a list", b'{"items": "abc"}', 422, "items"),
        ("blank title", b'{"items": [{"title": "   "}]}', 422, "items.0.title: is blank"),
        ("empty batch", b'{"items": []}', 422, "items: List should have at least 1 item"),
        (
            "over-size batch",
            json.dumps({"items": [{"title": "t"}] * 9}).encode(),
            422,
            "items: List should have at most 8 items",
        ),
        (
            "huge title",
            json.dumps({"items": [{"title": "x" * 201}]}).encode(),
            422,
            "at most 200 characters",
        ),
        (
            "huge description",
            json.dumps({"items": [{"title": "t", "description": "y" * 1001}]}).encode(),
            422,
            "at most 1000 characters",
        ),
        ("huge body", json.dumps({"items": [{"title": "z" * 30000}]}).encode(), 413, "20000 bytes"),
    ],
)
def test_bad_inputs_get_a_clear_4xx(server, name, raw, status, message):
    client, _ = server
    got, body = client.call("POST", "/predict", raw=raw)
    assert got == status, (name, body)
    assert message in body["detail"], (name, body)


def test_confident_items_are_applied_and_unsure_ones_queued_for_review(server, exported):
    """Through the real server and the int8 export: the items the model is sure of are stored
    with their topic, the unsure ones as `other` waiting in /review."""
    client, _ = server
    sure, unsure = split_by_confidence(export_folder(exported))
    stored = {}
    for row in (sure[0], unsure[0]):
        status, body = client.call(
            "POST", "/items", {"title": row["title"], "description": row["description"]}
        )
        assert status == 201, body
        stored[row["title"]] = body["item"]
    auto, review = stored[sure[0]["title"]], stored[unsure[0]["title"]]
    assert auto["tag"] == sure[0]["pred"]["tag"] != "other"
    assert (auto["needs_review"], auto["reason"], auto["tagged_by"]) == (
        False,
        "classifier",
        "model",
    )
    assert (review["tag"], review["needs_review"], review["reason"]) == (
        "other",
        True,
        "low_confidence",
    )
    _, queue = client.call("GET", "/review?limit=500")
    waiting = {it["id"] for it in queue["items"]}
    assert review["id"] in waiting and auto["id"] not in waiting


def test_a_batch_of_exactly_max_batch_items_is_answered(server):
    client, _ = server
    items = [{"title": f"Graph neural networks part {k}"} for k in range(8)]
    status, body = client.call("POST", "/predict", {"items": items})
    assert status == 200, body
    assert len(body["items"]) == 8


def test_an_oversized_chunked_body_gets_413(server):
    """No Content-Length: the limit is counted as the chunks arrive."""
    client, _ = server
    body = json.dumps({"items": [{"title": "z" * 30000}]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=20)
    try:
        conn.request(
            "POST",
            "/predict",
            body=(body[k : k + 4096] for k in range(0, len(body), 4096)),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        status, answer = resp.status, json.loads(resp.read())
    finally:
        conn.close()
    assert status == 413, answer
    assert "20000 bytes" in answer["detail"]


def test_unicode_emoji_and_other_languages_get_an_approved_tag(server):
    client, _ = server
    items = [
        {"title": "🚀🔥🤖", "description": "🙂"},
        {"title": "Détection d'objets en temps réel", "description": "avec des réseaux"},
        {"title": "画像分類のためのニューラルネットワーク", "description": ""},
        {"title": "a\u200bb\u00adc", "description": "\r\n\t"},
    ]
    status, body = client.call("POST", "/predict", {"items": items})
    assert status == 200, body
    assert all(p["tag"] in TAGS for p in body["items"])


def test_review_paging_health_metrics_and_docs(server):
    client, _ = server
    for k in range(3):  # reported items wait for a person whatever their confidence
        _, body = client.call("POST", "/items", {"title": f"Paging item number {k}"})
        report = {"item_id": body["item"]["id"], "correct_tag": "mlops"}
        assert client.call("POST", "/feedback", report)[0] == 201
    _, all_items = client.call("GET", "/review?limit=500")
    assert all_items["total"] == len(all_items["items"]) >= 3
    ids = [it["id"] for it in all_items["items"]]
    assert ids == sorted(ids)  # oldest first
    pages = [client.call("GET", f"/review?limit=1&offset={k}")[1] for k in range(3)]
    assert [p["items"][0]["id"] for p in pages] == ids[:3]  # one page each, no overlap
    assert all(p["total"] == all_items["total"] for p in pages)
    _, past_end = client.call("GET", f"/review?limit=10&offset={all_items['total']}")
    assert past_end["items"] == []
    assert client.call("GET", "/review?limit=100000")[0] == 422
    # Traffic of this test's own for the metrics below (tests run in any order).
    pair = [{"title": "Metrics probe item"}, {"title": "metrics probe item!"}]
    assert client.call("POST", "/predict", {"items": pair}, key=None)[0] == 200

    status, health = client.call("GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["backend"] == "onnx"
    assert health["store"]["schema_version"] >= 2 and health["store"]["items"] >= 1
    assert health["duplicate_screen"]["enabled"] is True

    status, text = client.call("GET", "/metrics")
    assert status == 200
    assert 'mltagger_requests_total{method="POST",route="/predict",status="200"}' in text
    assert 'mltagger_request_duration_seconds_bucket{le="0.1",route="/predict"}' in text
    assert "mltagger_predictions_total{tag=" in text
    assert "mltagger_needs_review_ratio" in text
    assert 'mltagger_duplicates_total{kind="exact"}' in text

    assert client.call("GET", "/docs")[0] == 200
    _, spec = client.call("GET", "/openapi.json")
    assert {"/predict", "/items", "/feedback", "/review", "/health", "/metrics"} <= set(
        spec["paths"]
    )


def test_near_duplicates_are_refused_or_flagged_by_policy(exported, tmp_path):
    """Through the Tagger with the real ONNX model, the shipped screen calibration and a real
    store: a typo'd repost is a near duplicate (not an exact one), held or refused by policy."""
    from mltagger.models.predict import Predictor
    from mltagger.serving.service import FLAG, HELD, REJECT, Tagger, prepare
    from mltagger.serving.store import Store

    predictor = Predictor(export_folder(exported))
    a = prepare(
        "Object detection with YOLO",
        "Real-time object detection in video streams "
        "with one convolutional network that predicts boxes and classes at once.",
    )
    b = prepare(
        "[P] Object detection with YOLO",
        "Real-time object detection in video streams "
        "with one convolutional netwrok that predicts boxes and clases at once.",
    )
    store = Store(f"sqlite:///{tmp_path / 'near.db'}")
    tagger = Tagger(predictor, store)
    (first,) = tagger.add([a], source="test")
    (refused,) = tagger.add([b], source="test", policy=REJECT)
    assert not refused.stored and refused.duplicate.kind == "near"
    assert refused.duplicate.item_id == first.item_id
    assert refused.duplicate.similarity >= tagger.near_threshold
    (flagged,) = tagger.add([b], source="test", policy=FLAG)
    assert flagged.stored and flagged.outcome == HELD
    row = store.get_item(flagged.item_id)
    assert row["duplicate_of"] == first.item_id and row["duplicate_kind"] == "near"
    assert (row["status"], row["needs_review"]) == ("duplicate", True)
    # A fresh Tagger on the same store screens against what is already stored.
    again = Tagger(predictor, store)
    assert len(again.index) == 2
    (dup,) = again.analyze([b])[1]  # b itself is stored now (held): an exact copy of it
    assert (dup.kind, dup.item_id) == ("exact", flagged.item_id)
    store.close()
    # Within one batch (empty store): the second of two near copies names the first, stored.
    c = prepare(
        "Knowledge graph embeddings",
        "Link prediction on a knowledge graph with "
        "translational embeddings of entities and relations.",
    )
    d = prepare(
        "Knowledge graph embeddings (code included)",
        "Link prediction on a knowledge "
        "graph with translational embeddings of entities and relations.",
    )
    fresh = Store(f"sqlite:///{tmp_path / 'batch.db'}")
    out = Tagger(predictor, fresh).add([c, d], source="test", policy=REJECT)
    assert out[0].stored and not out[1].stored
    assert out[1].duplicate.kind == "near" and out[1].duplicate.item_id == out[0].item_id
    assert fresh.count_items() == 1
    fresh.close()
    # policy=flag in one batch: both stored, the copy pointing at the first (stored just before).
    flagged_store = Store(f"sqlite:///{tmp_path / 'flag.db'}")
    first, copy = Tagger(predictor, flagged_store).add([c, d], source="test", policy=FLAG)
    assert first.stored and copy.stored and copy.duplicate.item_id == first.item_id
    assert flagged_store.get_item(copy.item_id)["duplicate_of"] == first.item_id
    flagged_store.close()


# The serving path runs on numpy, onnxruntime, tokenizers, FAISS, FastAPI and SQLAlchemy only.
SERVING_NEVER_IMPORTS = (
    "torch", "transformers", "sklearn", "scipy", "matplotlib", "datasets", "accelerate",
    "wandb", "optuna", "cleanlab", "pandas",
)  # fmt: skip


def test_serving_an_onnx_export_imports_nothing_heavy(exported, tmp_path):
    overrides = serve_overrides(export_folder(exported), tmp_path / "db.db")
    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from mltagger.core.config import compose_config\n"
        "from mltagger.serving.api import create_app\n"
        "from mltagger.serving.server import build_tagger\n"
        f"cfg = compose_config('serve', {overrides!r})\n"
        "client = TestClient(create_app(build_tagger(cfg), cfg))\n"
        "r = client.post('/predict', json={'items': [{'title': 'Object detection'}]})\n"
        "assert r.status_code == 200, r.text\n"
        "r = client.post('/items', json={'title': 'Object detection'},\n"
        "                headers={'X-API-Key': 'test-key'})\n"
        "assert r.status_code == 201, r.text\n"
        f"heavy = [m for m in {SERVING_NEVER_IMPORTS!r} if m in sys.modules]\n"
        "assert not heavy, f'the serving path imported {heavy}'\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "MLTAGGER_ROOT": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_every_acknowledged_feedback_survives_a_kill(exported, tmp_path):
    """SIGKILL the service while a client streams /feedback; after a restart every write that
    got a 201 is in the database."""
    db = tmp_path / "kill.db"
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "mltagger",
        "serve",
        *serve_overrides(export_folder(exported), db),
    ]
    env = {**os.environ, "MLTAGGER_ROOT": str(REPO)}

    def start():
        proc = subprocess.Popen(
            [*args, f"port={port}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = Client(port)
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, "the service exited at start"
            assert time.time() < deadline, "the service did not start"
            try:
                if client.call("GET", "/health")[0] == 200:
                    return proc, client
            except OSError:
                time.sleep(0.2)

    proc, client = start()
    try:
        _, body = client.call("POST", "/items", {"title": "Feedback target item"})
        item_id = body["item"]["id"]
        acked: list[int] = []
        errors = 0
        killer = threading.Timer(2.0, lambda: os.kill(proc.pid, signal.SIGKILL))
        killer.start()
        for k in range(2000):  # bounded; the kill ends it long before
            try:
                status, fb = client.call(
                    "POST",
                    "/feedback",
                    {"item_id": item_id, "correct_tag": "mlops", "comment": f"report {k}"},
                )
            except (OSError, http.client.HTTPException):
                errors += 1
                break
            if status == 201:
                acked.append(fb["id"])
        killer.join()
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        assert len(acked) > 5, "the kill came before any write was acknowledged"
        proc, client = start()
        _, item = client.call("GET", f"/items/{item_id}")
        stored = {f["id"] for f in item["feedback"]}
        assert set(acked) <= stored, f"lost acknowledged writes: {sorted(set(acked) - stored)[:10]}"
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)


def test_ingest_stores_rejects_and_is_idempotent(exported, tmp_path):
    drop = tmp_path / "drop.jsonl"
    drop.write_text(
        "\n".join(
            [
                json.dumps({"title": "Object detection with YOLO", "description": "Real-time."}),
                json.dumps({"title": "object detection with yolo!", "description": "real time"}),
                json.dumps({"title": "Serving models on Kubernetes", "description": "Scale it."}),
                json.dumps({"title": "", "description": "no title"}),
                "this line is not JSON",
                json.dumps({"title": "Graph neural networks", "description": "Node labels."}),
            ]
        )
        + "\n"
    )
    db = tmp_path / "ingest.db"
    # Only the exact stage decides here (the near one is covered above).
    overrides = [
        f"model_dir={export_folder(exported)}",
        f"store.url=sqlite:///{db}",
    ]
    first = run_job("ingest", str(drop), "--json", *overrides)
    assert first.returncode == 0, first.stderr[-3000:]
    s1 = json.loads(first.stdout.strip().splitlines()[-1])
    assert (s1["rows"], s1["valid"], s1["rejected"]) == (6, 4, 2)
    assert s1["stored"] == 3 and s1["duplicates_by_kind"] == {"exact_text": 1}
    # The summary counts what the store holds.
    from mltagger.serving.store import Store

    store = Store(f"sqlite:///{db}")
    _queue, waiting = store.review_queue(50)
    rows = [store.get_item(i) for i in range(1, store.count_items() + 1)]
    store.close()
    assert s1["needs_review"] == waiting == sum(r["needs_review"] for r in rows)
    by_tag: dict = {}
    for r in rows:
        by_tag[r["tag"]] = by_tag.get(r["tag"], 0) + 1
    assert s1["stored_by_tag"] == by_tag
    rejects = [json.loads(line) for line in Path(s1["rejects_file"]).read_text().splitlines()]
    assert [r["row"] for r in rejects] == [4, 5]
    assert rejects[1]["data"] == "this line is not JSON"  # what arrived is kept
    assert "stored 3" in first.stdout

    second = run_job("ingest", str(drop), "--json", "--quiet", *overrides)
    assert second.returncode == 0, second.stderr[-3000:]
    s2 = json.loads(second.stdout.strip().splitlines()[-1])
    assert s2["stored"] == 0 and s2["duplicates_skipped"] == 4
    assert s2["previous_runs_of_this_file"] == 1

    missing = run_job("ingest", str(tmp_path / "nope.jsonl"), *overrides)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_ingest_applies_confident_tags_and_queues_the_unsure_items(exported, tmp_path):
    folder = export_folder(exported)
    sure, unsure = split_by_confidence(folder)
    drop = tmp_path / "drop.jsonl"
    drop.write_text(
        "".join(
            json.dumps({"title": r["title"], "description": r["description"]}) + "\n"
            for r in [*sure, *unsure]
        )
    )
    db = tmp_path / "ingest.db"
    overrides = [f"model_dir={folder}", f"store.url=sqlite:///{db}"]
    proc = run_job("ingest", str(drop), "--json", "--quiet", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["stored"] == len(sure) + len(unsure)
    assert summary["needs_review"] == len(unsure)
    expected: dict = {"other": len(unsure)}
    for r in sure:
        expected[r["pred"]["tag"]] = expected.get(r["pred"]["tag"], 0) + 1
    assert summary["stored_by_tag"] == expected
    from mltagger.serving.store import Store

    store = Store(f"sqlite:///{db}")
    queue, total = store.review_queue(100)
    store.close()
    assert total == len(unsure)
    assert [it["title"] for it in queue] == [r["title"] for r in unsure]
    assert all(it["tag"] == "other" and it["reason"] == "low_confidence" for it in queue)


def test_feedback_reaches_the_next_training_file(exported, tmp_path, data_cfg):
    """Feedback through the Tagger's store -> dataset build -> a data config whose prepared
    splits hold the item with the person's tag; a second build with nothing new is refused."""
    from omegaconf import OmegaConf

    from mltagger.core.errors import DataError
    from mltagger.data.prepare import prepare_data
    from mltagger.data.validation import sha256_file
    from mltagger.models.predict import Predictor
    from mltagger.serving.dataset import ID_OFFSET, build
    from mltagger.serving.service import Tagger, prepare
    from mltagger.serving.store import Store

    url = f"sqlite:///{tmp_path / 'fb.db'}"
    store = Store(url)
    tagger = Tagger(Predictor(export_folder(exported)), store)
    (out,) = tagger.add(
        [prepare("Sequence labelling for clinical notes", "CRF and BERT")], source="api"
    )
    store.add_feedback(out.item_id, "natural-language-processing", "this is NLP")
    store.close()
    data_cfg.name = "projects"
    result = build(
        url,
        data_cfg,
        tmp_path,
        out_dir=tmp_path / "feedback",
        config_dir=tmp_path / "conf",
    )
    assert result["version"] == 1 and result["rows"] == 1
    rows = json.loads(Path(result["file"]).read_text())
    assert rows[0]["id"] == ID_OFFSET + out.item_id
    assert rows[0]["tag"] == "natural-language-processing" and rows[0]["label_source"] == "feedback"
    assert sha256_file(result["file"]) == result["sha256"]
    assert "v1" in (tmp_path / "feedback" / "CHANGELOG.md").read_text()

    generated = OmegaConf.load(result["config"])
    assert generated.defaults[0] == "projects"
    cfg = OmegaConf.merge(data_cfg, {"sources": generated.sources})
    data = prepare_data(cfg, tmp_path)
    found = [it for s in data.splits.values() for it in s if it["id"] == ID_OFFSET + out.item_id]
    assert len(found) == 1 and found[0]["tag"] == "natural-language-processing"
    assert found[0]["source"] == "feedback"

    with pytest.raises(DataError, match="no new human labels"):
        build(url, data_cfg, tmp_path, out_dir=tmp_path / "feedback", config_dir=tmp_path / "conf")


def load_test(exported, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """`mltagger load-test` on the tiny export: a real service and real locust runs, short."""
    return subprocess.run(
        [
            sys.executable, "-m", "mltagger", "load-test", "--model", str(export_folder(exported)),
            "--users", "2", "--run-time", "1", "--batch-size", "4", "--out", str(out), *extra,
        ],
        cwd=REPO,
        env={**os.environ, "MLTAGGER_ROOT": str(REPO)},
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip


@pytest.mark.slow  # ~20 s of locust runs; tests/unit/benchmarks covers its parsing (make test-all)
def test_load_test_drives_the_service_with_locust(exported, tmp_path):
    out, db = tmp_path / "load", tmp_path / "load.db"
    # --serve reaches the started service: here a store that outlives the run, to count in it
    proc = load_test(
        exported, out, "--scenarios", "single,batched,store", "--batching", "on",
        "--serve", f"store.url=sqlite:///{db}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["scenario"]: r for r in summary["results"]}
    assert list(rows) == ["single", "batched", "store"]
    for r in rows.values():
        assert r["workers"] == 1 and r["users"] == 2 and r["batching"] == "on"
        assert r["requests"] > 0 and r["failures"] == 0, r
        assert r["items_per_s"] > 0 and r["p50_ms"] is not None and r["p99_ms"] >= r["p50_ms"]
    assert rows["batched"]["batch"] == 4
    assert rows["batched"]["items_per_s"] == pytest.approx(4 * rows["batched"]["requests_per_s"])
    # POST /items passed the key check and stored every item it sent (none refused as a copy);
    # a request cut off when the run time ran out may be stored without being counted
    store = Store(f"sqlite:///{db}")
    try:
        assert rows["store"]["requests"] <= store.count_items() <= rows["store"]["requests"] + 2
    finally:
        store.close()
    for name in ("single_stats.csv", "store_stats_history.csv", "serve.log"):
        assert (out / "workers-1-batching-on" / name).is_file()
    assert "items/s" in proc.stdout and "p95 ms" in proc.stdout


@pytest.mark.slow
def test_load_test_reports_items_per_second_against_one_worker(exported, tmp_path):
    out = tmp_path / "load"
    proc = load_test(
        exported, out, "--workers", "1,2", "--scenarios", "batched", "--batching", "on"
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["workers"] for r in summary["results"]] == [1, 2]
    ratios = summary["items_per_s_vs_1_worker"]["batched (2 users, batching on)"]
    assert ratios["1"] == 1.0 and ratios["2"] > 0
    assert "relative to 1 worker" in proc.stdout


@pytest.mark.slow
def test_load_test_compares_batching_on_and_off_in_one_run(exported, tmp_path):
    out = tmp_path / "load"
    proc = load_test(exported, out, "--scenarios", "exact,single")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = [(r["batching"], r["scenario"]) for r in summary["results"]]
    assert rows == [("on", "exact"), ("on", "single"), ("off", "exact"), ("off", "single")]
    exact = summary["results"][0]
    assert exact["requests"] == 300 and 0 < exact["p50_ms"] <= exact["p99_ms"]
    assert set(summary["raw_items_per_s"]) == {"2"}
    comps = {(c["scenario"], c["users"]): c for c in summary["batching"]}
    assert comps[("single", 2)]["on_over_off"] > 0 and comps[("single", 2)]["on_over_raw"] > 0
    assert "p50_on_minus_off_ms" in comps[("exact", 1)]
    assert "batching on/off items/s" in proc.stdout and "raw model items/s" in proc.stdout


def test_monitor_reads_an_ingested_stream_against_the_exports_own_profile(exported, tmp_path):
    """The real thing small: an ONNX export carries its reference profile, ingest stores author
    tags, and `mltagger monitor` writes its report and the snapshot /metrics exports."""
    folder = export_folder(exported)
    assert (folder / "reference_profile.npz").is_file()  # written by the export
    db = tmp_path / "monitor.db"
    drop = tmp_path / "hour.jsonl"
    titles = [
        "Object detection with YOLO", "Serving models on Kubernetes", "Graph neural networks",
        "Forecasting sales with transformers", "Text classification with BERT",
        "Policy gradients for robots", "Image segmentation for scans", "Time series anomalies",
        "Tokenizers for many languages", "Feature stores in production",
    ]  # fmt: skip
    drop.write_text(
        "".join(
            json.dumps({"title": t, "description": f"Item {k}.", "author_tag": TAGS[k % 6]}) + "\n"
            for k, t in enumerate(titles)
        )
    )
    overrides = serve_overrides(folder, db, "monitor.audit_share=0.5")
    assert run_job("ingest", str(drop), "--quiet", *overrides).returncode == 0
    empty = run_job("monitor", "--days", "0.000001", *serve_overrides(folder, tmp_path / "e.db"))
    assert empty.returncode == 0 and "nothing to monitor" in empty.stdout
    out = tmp_path / "report"
    proc = run_job("monitor", "--output", str(out), "--permutations", "200", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "monitor.json").read_text())
    assert summary["window"]["items"] == 10 and "<img" in (out / "monitor.html").read_text()
    author = [r for r in summary["online"] if r["signal"] == "author" and r["tag"] == "all"]
    assert author and all(0 <= r["precision"] <= 1 for r in author if r["n"])
    assert set(summary["drift"]["pvalues"]) == {
        "embedding", "tags", "confidence", "review_rate", "length", "vocabulary",
    }  # fmt: skip
    store = Store(f"sqlite:///{db}")
    assert store.latest_snapshot()["window"]["items"] == 10
    store.close()
