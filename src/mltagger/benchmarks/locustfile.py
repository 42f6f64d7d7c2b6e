"""The locust users that `mltagger load-test` runs: one user class per scenario.

    locust -f src/mltagger/benchmarks/locustfile.py --headless -u 4 -r 4 -t 30s \
        --host http://127.0.0.1:8000 PredictOneUser

`mltagger load-test` starts locust as a subprocess with this file and one class name, so each
scenario is measured alone (a mixed run would make the scenarios compete for the same two cores).
Locust imports this file in its own (gevent-patched) process. It imports nothing of mltagger, so
that process stays light (it shares the cores with the service) and the file runs wherever
locust does; the settings therefore arrive as environment variables:

  MLTAGGER_LOAD_ITEMS   a JSON file with a list of {"title", "description"} (load.py writes the
                        shipped test items there); unset: the few built-in items below
  MLTAGGER_LOAD_BATCH   items per request of PredictBatchUser (default 32)
  MLTAGGER_API_KEY      the X-API-Key sent with every request (the key the service was started
                        with): POST /items needs one, and on POST /predict it lifts the
                        per-client rate limit that keyless callers get

Users send the next request as soon as the answer arrives (no think time): the figure is what
the service sustains under N concurrent clients, not a model of human visitors.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import uuid
from pathlib import Path

from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from mltagger.core.errors import DataError

# Only for a bare `locust -f` run without load.py: enough to exercise the endpoints.
_FALLBACK_ITEMS = [
    {"title": "Object detection with YOLO", "description": "Real-time detection in video."},
    {"title": "Graph neural networks", "description": "Node classification on citation graphs."},
    {"title": "Forecast sales with an LSTM", "description": "Daily time series of a shop."},
    {"title": "Serving models on Kubernetes", "description": "Deploy and scale a model API."},
]


def _items() -> list[dict]:
    path = os.environ.get("MLTAGGER_LOAD_ITEMS")
    if not path:
        return _FALLBACK_ITEMS
    items = json.loads(Path(path).read_text(encoding="utf-8"))
    if not items:
        raise DataError(f"{path} holds no items")
    return items


ITEMS = _items()
BATCH = int(os.environ.get("MLTAGGER_LOAD_BATCH", "32"))
API_KEY = os.environ.get("MLTAGGER_API_KEY", "")
HEADERS = {"X-API-Key": API_KEY} if API_KEY else {}
# One cursor for every user of this process (greenlets, so next() needs no lock): consecutive
# requests carry different texts, as real traffic would, instead of every user repeating item 0.
_cursor = itertools.count()


def next_items(n: int) -> list[dict]:
    return [ITEMS[next(_cursor) % len(ITEMS)] for _ in range(n)]


class _Predict(FastHttpUser):
    """POST /predict with `batch` items; a 200 whose answer lacks an item counts as a failure."""

    abstract = True
    wait_time = constant(0)
    batch = 1

    def predict(self) -> None:
        body = {"items": next_items(self.batch)}
        name = f"POST /predict [{self.batch}]"
        with self.client.post(
            "/predict", json=body, headers=HEADERS, name=name, catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"{resp.status_code}: {(resp.text or '')[:200]}")
            elif len(resp.json().get("items", [])) != self.batch:
                resp.failure(f"{len(resp.json().get('items', []))} answers for {self.batch} items")


class PredictOneUser(_Predict):
    """One item per request: the latency a caller tagging items one by one sees."""

    batch = 1

    @task
    def one(self) -> None:
        self.predict()


class PredictBatchUser(_Predict):
    """MLTAGGER_LOAD_BATCH items per request: the throughput of a batch caller."""

    batch = BATCH

    @task
    def batched(self) -> None:
        self.predict()


class StoreItemUser(FastHttpUser):
    """POST /items: screen, tag and store one item, the write path with its store commit.

    Each item gets a unique token, because the shipped texts cycle and the service answers an
    exact copy of a stored item with 409 (which would then measure the refusal, not the write);
    a near copy is still stored (held for review) and answered 201.
    """

    wait_time = constant(0)

    @task
    def store(self) -> None:
        (item,) = next_items(1)
        body = {**item, "description": f"{item['description']} (load {uuid.uuid4().hex})"}
        with self.client.post(
            "/items", json=body, headers=HEADERS, name="POST /items", catch_response=True
        ) as resp:
            if resp.status_code != 201:
                resp.failure(f"{resp.status_code}: {(resp.text or '')[:200]}")


_run: dict[str, Environment] = {}


@events.init.add_listener
def _remember(environment: Environment, **_kwargs) -> None:
    _run["env"] = environment


@events.quit.add_listener
def _write_final_csv(**_kwargs) -> None:
    """Rewrite `<prefix>_stats.csv` and `_failures.csv` from the final stats.

    Locust rewrites those files once a second while the test runs and not again at the end, so
    they miss the last second (a few percent of a 30 s run, a quarter of a 3 s one). The quit
    event fires after the users are stopped and before locust closes its files.
    """
    env = _run.get("env")
    prefix = getattr(env.parsed_options, "csv_prefix", None) if env is not None else None
    if not prefix:
        return
    writer = StatsCSV(env, PERCENTILES_TO_REPORT)
    with open(f"{prefix}_stats.csv", "w", newline="", encoding="utf-8") as f:
        writer.requests_csv(csv.writer(f))
    with open(f"{prefix}_failures.csv", "w", newline="", encoding="utf-8") as f:
        writer.failures_csv(csv.writer(f))
