"""Changing the approved tag list never stops the service: a real server on 127.0.0.1 keeps
tagging from another thread while an admin adds, retires and removes tags and a model that
answers a new tag is promoted; not one call fails, the pending tag is answered only once the
promoted model answers it, and the promotion made it active."""

from __future__ import annotations

import threading
import time

import numpy as np

from mltagger.core.config import compose_config
from mltagger.models.modelio import InferenceConfig, write_model_metadata
from mltagger.serving.api import create_app
from mltagger.serving.rollout import record_deployment
from mltagger.serving.service import Tagger
from mltagger.serving.store import Store
from tests.conftest import TAGS
from tests.e2e.test_serve import Client, on_uvicorn
from tests.fakes import FakePredictor, make_model_folder

KEY = "live-admin-key"
QUANTUM = "quantum-computing"


class AnswersQuantum(FakePredictor):
    """The fake model with an eighth class, sure for texts that name a qubit."""

    def encode(self, texts):
        logits, emb = super().encode(texts)
        extra = np.array([[8.0 if "qubit" in t.lower() else 0.0] for t in texts])
        return np.hstack([logits, extra]), emb


def load(folder):
    return AnswersQuantum(folder) if QUANTUM in folder.name else FakePredictor(folder)


def test_the_service_keeps_answering_while_the_list_changes(tmp_path):
    wider = tmp_path / f"model-{QUANTUM}"
    write_model_metadata(
        wider,
        [*TAGS, QUANTUM],
        InferenceConfig(threshold=0.8, temperature=2.0, approved_tags=[*TAGS, QUANTUM],
                        model_version="fake-2", extra={"embedding_layer": 0}),
    )  # fmt: skip
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    tagger = Tagger(FakePredictor(make_model_folder(tmp_path / "m")), store, dedup=False,
                    loader=load)  # fmt: skip
    cfg = compose_config("serve", [f"model_dir={tmp_path / 'm'}", f"api_key={KEY}"])
    answers, failures, stop = [], [], threading.Event()

    def keep_tagging(client: Client) -> None:
        body = {"items": [{"title": "A qubit simulator"}]}
        while not stop.is_set():
            try:
                status, got = client.call("POST", "/predict", body, key=KEY)
            except OSError as err:
                failures.append(repr(err))
                continue
            if status == 200:
                answers.append(got["items"][0]["tag"])
            else:
                failures.append((status, got))

    try:
        with on_uvicorn(create_app(tagger, cfg), cfg) as port:
            client = Client(port)
            worker = threading.Thread(target=keep_tagging, args=(client,), daemon=True)
            worker.start()
            admin = [
                ("POST", "/tags", {"name": "audio"}, 201),
                ("POST", "/tags/time-series/retire", None, 200),
                ("DELETE", "/tags/audio", None, 200),
                ("POST", "/tags", {"name": QUANTUM}, 201),
            ]
            for method, path, body, want in admin:
                status, got = client.call(method, path, body, key=KEY)
                assert status == want, (path, got)
                time.sleep(0.2)
            before = len(answers)
            assert before and QUANTUM not in answers, failures[
                :3
            ]  # pending: the serving model cannot answer it
            record_deployment(store.engine, wider, "promote", actor="ana")
            deadline = time.time() + 15
            while QUANTUM not in answers[before:] and time.time() < deadline:
                time.sleep(0.1)
            stop.set()
            worker.join(timeout=20)
            status, listed = client.call("GET", "/tags", key=KEY)
    finally:
        store.close()
    assert failures == []
    assert QUANTUM in answers[before:], "the promoted model answers the new tag"
    statuses = {t["name"]: t["status"] for t in listed["tags"]}
    assert statuses[QUANTUM] == "active" and statuses["time-series"] == "retiring"
    assert listed["serving_model"] == "fake-2"
