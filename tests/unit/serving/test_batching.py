"""The micro-batcher (`mltagger.serving.batching`) with a fake model: what is run together, what
each caller gets back, timeouts, errors and shutdown."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mltagger.core.errors import ConfigError
from mltagger.serving.batching import BatchSettings, MicroBatcher, Overloaded


class FakeModel:
    """Logits that depend on each text alone; records the size of every pass."""

    def __init__(self, delay: float = 0.0, fail_on: str | None = None) -> None:
        self.delay, self.fail_on = delay, fail_on
        self.passes: list[int] = []
        self.lock = threading.Lock()

    def encode(self, texts):
        with self.lock:
            self.passes.append(len(texts))
        if self.fail_on is not None and self.fail_on in texts:
            raise ValueError(f"cannot encode {self.fail_on!r}")
        time.sleep(self.delay)
        logits = np.array([[len(t), sum(map(ord, t)) % 97] for t in texts], dtype=np.float64)
        return logits, logits[:, :1].astype(np.float32)


def fire(batcher, model, requests, workers=16):
    """Send every request from its own thread at once; their results in order."""
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(batcher.encode, model, texts) for texts in requests]
        return [f.result() for f in futures]


def test_a_request_alone_runs_at_once_without_waiting():
    model = FakeModel()
    batcher = MicroBatcher(BatchSettings(max_wait_ms=500))
    t0 = time.perf_counter()
    logits, _ = batcher.encode(model, ["one text"])
    assert time.perf_counter() - t0 < 0.25  # far below max_wait: nothing waits for company
    assert model.passes == [1]
    np.testing.assert_array_equal(logits, model.encode(["one text"])[0])
    batcher.close()


def test_concurrent_requests_share_passes_and_each_gets_its_own_rows():
    model = FakeModel(delay=0.02)
    observed = []
    batcher = MicroBatcher(BatchSettings(max_batch=8), lambda n, waits: observed.append(n))
    requests = [[f"text {i}"] for i in range(40)]
    results = fire(batcher, model, requests)
    for texts, (logits, emb) in zip(requests, results, strict=True):
        np.testing.assert_array_equal(logits, FakeModel().encode(texts)[0])
        assert emb.shape == (1, 1)
    assert sum(model.passes) == 40
    assert max(model.passes) <= 8
    assert len(model.passes) < 40  # some passes held several requests
    assert observed == model.passes
    batcher.close()


def test_a_request_larger_than_max_batch_runs_alone_and_whole():
    model = FakeModel()
    batcher = MicroBatcher(BatchSettings(max_batch=4))
    logits, _ = batcher.encode(model, [f"t{i}" for i in range(10)])
    assert len(logits) == 10 and model.passes == [10]
    batcher.close()


def test_requests_for_different_models_never_share_a_pass():
    a, b = FakeModel(delay=0.01), FakeModel(delay=0.01)
    batcher = MicroBatcher(BatchSettings(max_batch=64))
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(batcher.encode, (a, b)[i % 2], [f"x{i}"]) for i in range(32)]
        for f in futures:
            f.result()
    assert sum(a.passes) == 16 and sum(b.passes) == 16
    batcher.close()


def test_a_request_that_waits_too_long_gets_overloaded_not_a_hang():
    model = FakeModel(delay=0.5)
    batcher = MicroBatcher(BatchSettings(max_batch=1, queue_timeout_ms=50))
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(batcher.encode, model, ["slow"])
        time.sleep(0.05)  # the first pass is running
        t0 = time.perf_counter()
        with pytest.raises(Overloaded) as err:
            batcher.encode(model, ["queued"])
        assert time.perf_counter() - t0 < 0.4
        assert err.value.retry_after_s >= 1 and "waited" in str(err.value)
        first.result()
    assert batcher.rejected == 1
    time.sleep(0.6)
    assert model.passes == [1]
    batcher.close()


def test_an_error_reaches_only_the_request_that_caused_it():
    model = FakeModel(delay=0.02, fail_on="bad")
    batcher = MicroBatcher(BatchSettings(max_batch=32))
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(batcher.encode, model, [t]) for t in ["a", "b", "bad", "c", "d"]]
        outcomes = []
        for f in futures:
            try:
                f.result()
                outcomes.append("ok")
            except ValueError as e:
                outcomes.append(str(e))
    assert outcomes == ["ok", "ok", "cannot encode 'bad'", "ok", "ok"]
    batcher.close()


def test_close_answers_every_queued_request_then_refuses_new_ones():
    model = FakeModel(delay=0.05)
    batcher = MicroBatcher(BatchSettings(max_batch=2))
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(batcher.encode, model, [f"t{i}"]) for i in range(8)]
        time.sleep(0.02)
        batcher.close()
        assert all(len(f.result()[0]) == 1 for f in futures)
    with pytest.raises(Overloaded):
        batcher.encode(model, ["late"])


def test_batching_off_calls_the_model_directly():
    model = FakeModel()
    batcher = MicroBatcher(BatchSettings(enabled=False))
    batcher.encode(model, ["a"])
    assert batcher._thread is None and model.passes == [1]


@pytest.mark.parametrize(
    "section, message",
    [
        ({"max_batch": 0}, "batching.max_batch=0: expected 1 to 1024"),
        ({"max_wait_ms": -1}, "batching.max_wait_ms=-1: expected 0 to 1000"),
        ({"queue_timeout_ms": "soon"}, "batching.queue_timeout_ms='soon': expected a number"),
        ({"max_batch": True}, "batching.max_batch=True: expected a number"),
        ({"max_wait": 3}, "batching.max_wait: unknown key"),
    ],
)
def test_settings_out_of_range_are_one_line_errors(section, message):
    with pytest.raises(ConfigError) as err:
        BatchSettings.from_config(section)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


@pytest.fixture
def busy_app(tagger, tmp_path):
    """The app over the known-answer tagger with a micro-batcher that gives up after 50 ms."""
    from fastapi.testclient import TestClient

    from mltagger.core.config import compose_config
    from mltagger.serving.api import create_app

    tagger.batcher = MicroBatcher(BatchSettings(max_batch=1, queue_timeout_ms=50))
    cfg = compose_config("serve", [f"model_dir={tmp_path / 'model'}", "api_key=k"])
    with TestClient(create_app(tagger, cfg)) as client:
        yield client, tagger
    assert tagger.batcher._closed  # the app's shutdown closed (drained) the queue


def test_a_request_stuck_behind_the_model_gets_503_with_retry_after(busy_app):
    client, tagger = busy_app
    item = {"title": "Image segmentation", "description": "U-Net on scans."}
    assert client.post("/predict", json={"items": [item]}).status_code == 200
    slow = FakeModel(delay=0.6)
    with ThreadPoolExecutor(1) as pool:
        hold = pool.submit(tagger.batcher.encode, slow, ["holds the model"])
        time.sleep(0.05)
        r = client.post("/predict", json={"items": [item]})
        hold.result()
    assert r.status_code == 503 and int(r.headers["Retry-After"]) >= 1
    assert "queue" in r.json()["detail"]
    metrics = client.get("/metrics").text
    assert "mltagger_overloaded_total 1.0" in metrics
    assert "mltagger_batch_items_count 2.0" in metrics  # the first /predict and the held pass
    assert "mltagger_batch_queue_wait_seconds_count 2.0" in metrics
    doc = client.get("/openapi.json").json()
    for path, method in (("/predict", "post"), ("/items", "post")):
        assert "503" in doc["paths"][path][method]["responses"]
