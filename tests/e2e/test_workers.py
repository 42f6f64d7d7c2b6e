"""`mltagger serve workers=2`: two uvicorn worker processes over one store, as `make serve
WORKERS=2` runs them. The same item sent at once many times is stored once (every other answer
is its exact copy), /metrics adds up both workers, and a worker killed mid-stream loses no write
that was acknowledged (uvicorn starts a new one; the other keeps serving)."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mltagger.serving.store import Store
from tests.conftest import REPO
from tests.e2e.test_serve import Client, export_folder, free_port, serve_overrides


def start_workers(exported, store_url: str, port: int, workers: int = 2):
    args = [
        sys.executable,
        "-m",
        "mltagger",
        "serve",
        *serve_overrides(export_folder(exported), REPO / "unused.db"),
        f"store.url='{store_url}'",  # quoted: a PostgreSQL URL holds '=' and '?'
        # a server store's saved screen index in a folder of its own, not the checkout's var/
        *([] if store_url.startswith("sqlite") else [f"dedup.index_dir={tempfile.mkdtemp()}"]),
        f"workers={workers}",
        f"port={port}",
    ]
    proc = subprocess.Popen(
        args,
        cwd=REPO,
        env={**os.environ, "MLTAGGER_ROOT": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # one group: the supervisor and its workers end together
    )
    client = Client(port)
    deadline = time.time() + 120
    pids: set[int] = set()
    while len(pids) < workers:  # every worker up (each loads the model and the index)
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, "the workers did not start"
        try:
            status, body = client.call("GET", "/health")
            if status == 200:
                pids.add(body["worker_pid"])
        except OSError:
            time.sleep(0.3)
    return proc, client, pids


def stop(proc) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_two_workers_store_one_copy_add_up_metrics_and_lose_nothing_when_one_dies(
    exported, tmp_path
):
    store_url = f"sqlite:///{tmp_path / 'workers.db'}"
    port = free_port()
    proc, client, pids = start_workers(exported, store_url, port)
    try:
        assert len(pids) == 2
        # The same new item, 12 requests at once over fresh connections (spread over both).
        item = {"title": "Counting trams with event cameras", "description": "Open data."}
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: client.call("POST", "/items", item), range(12)))
        codes = sorted(code for code, _ in answers)
        assert codes == [201] + [409] * 11, answers
        stored_id = next(body["item"]["id"] for code, body in answers if code == 201)
        assert {body["duplicate_of"] for code, body in answers if code == 409} == {stored_id}
        # /metrics is the sum over both workers: every stored/refused add is counted once.
        text = ""
        seen: set[int] = set()
        for _ in range(40):  # scrape until both workers answered a scrape
            status, health = client.call("GET", "/health")
            seen.add(health["worker_pid"])
            _, text = client.call("GET", "/metrics")
            if len(seen) == 2:
                break
        assert metric(text, 'mltagger_add_outcomes_total{outcome="stored"') == 1
        assert metric(text, 'mltagger_add_outcomes_total{outcome="skipped_exact_copy"') == 11

        # Kill one worker while a client streams reports; every 201 must be stored.
        victim = next(iter(pids))
        acked: list[int] = []
        killer = threading.Timer(1.5, lambda: os.kill(victim, signal.SIGKILL))
        killer.start()
        deadline = time.time() + 6
        while time.time() < deadline:
            try:
                status, fb = client.call(
                    "POST",
                    "/feedback",
                    {"item_id": stored_id, "correct_tag": "computer-vision", "comment": "k"},
                )
            except (OSError, http.client.HTTPException):
                continue  # the connection the dying worker held
            if status == 201:
                acked.append(fb["id"])
        killer.join()
        assert len(acked) > 5
        status, after = client.call("GET", f"/items/{stored_id}")  # the service still answers
        assert status == 200
        stored = {f["id"] for f in after["feedback"]}
        assert set(acked) <= stored, f"lost: {sorted(set(acked) - stored)[:10]}"
    finally:
        stop(proc)
    store = Store(store_url)
    try:
        assert store.count_items() == 1
        with store.engine.connect() as conn:
            who = {r[0] for r in conn.exec_driver_sql("SELECT written_by FROM items")}
        assert who == {"config"}
    finally:
        store.close()


def test_serve_refuses_a_bad_worker_count_in_one_line(exported, tmp_path):
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "mltagger", "serve", "workers=0"),
            f"model_dir={export_folder(exported)}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MLTAGGER_ROOT": str(REPO)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "workers" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.slow  # the same over PostgreSQL (tests/pg.py): `make test-all`
def test_two_workers_over_postgresql_store_one_copy(exported, tmp_path, postgres):
    from tests import pg

    with pg.fresh_database(postgres) as url:
        proc, client, _ = start_workers(exported, url, free_port())
        try:
            item = {"title": "Counting bicycles with radar", "description": "City data."}
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda _: client.call("POST", "/items", item), range(8)))
            assert sorted(code for code, _ in answers) == [201] + [409] * 7, answers
        finally:
            stop(proc)
        store = Store(url)
        assert store.count_items() == 1
        store.close()


def test_workers_start_from_the_saved_screen_index_and_save_it_when_they_stop(exported, tmp_path):
    """The screen index of `dedup.index_dir=auto` (beside the SQLite file): the first start
    builds and saves it, the workers save the items stored since when they stop (SIGTERM),
    and the next start maps that save (nothing rebuilt: the published save stays the same)."""
    from mltagger.screen import persist

    store_url = f"sqlite:///{tmp_path / 'workers.db'}"
    folder = tmp_path / "workers.screen-index"
    proc, client, _ = start_workers(exported, store_url, free_port())
    try:
        assert persist.peek(folder)["items"] == 0  # built at the first start, empty store
        for i in range(5):
            item = {"title": f"Counting trams {i} with radar", "description": f"Open data {i}."}
            assert client.call("POST", "/items", item)[0] == 201
    finally:
        stop(proc)
    saved = persist.published(folder)
    assert persist.peek(folder)["max_id"] == 5, proc.stderr.read()[-5000:]  # saved at exit
    proc, client, _ = start_workers(exported, store_url, free_port())
    try:
        item = {"title": "Counting trams 3 with radar", "description": "Open data 3"}
        status, body = client.call("POST", "/items", item)
        assert status == 409 and body["duplicate_of"] == 4, body  # found in the loaded save
    finally:
        stop(proc)
    assert persist.published(folder) == saved  # loaded, not rebuilt; nothing new to save
