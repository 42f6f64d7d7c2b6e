"""The API keeps the contract its OpenAPI document states, checked by Schemathesis against the
real server (uvicorn on 127.0.0.1, the tiny exported model, a SQLite file): every check on, a
stated minimum of generated requests per operation, zero failures; and a stateful run that
chains calls through the links the document declares (a stored item -> read it, report it,
review it), with the number of chained steps asserted.

The seed is fixed so CI is reproducible; `make contract` runs the same with a random seed and
more examples."""

from __future__ import annotations

import collections
import contextlib
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mltagger.serving.store import Store
from mltagger.serving.tag_proposals import add_proposals
from tests.e2e.test_serve import KEY, export_folder, serve_overrides, serving

MIN_CASES = 20  # generated requests per operation that takes input (coverage + fuzzing phases)
# fixed so CI is reproducible; MLTAGGER_CONTRACT_SEED=N tries another generation
SEED = os.environ.get("MLTAGGER_CONTRACT_SEED", "20261129")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def contract_server(request, exported, tmp_path_factory):
    """The service on each kind of store: SQLite hid a NUL character that PostgreSQL refuses
    (a 500 until the schemas said no), so the contract is checked on both."""
    tmp = tmp_path_factory.mktemp(f"contract-{request.param}")
    with contextlib.ExitStack() as stack:
        store = f"sqlite:///{tmp / 'store.db'}"
        if request.param == "postgresql":
            from tests import pg

            store = stack.enter_context(pg.fresh_database(request.getfixturevalue("postgres")))
        yield stack.enter_context(_serving_on(exported, tmp, store))


@contextlib.contextmanager
def _serving_on(exported, tmp, store_url: str):
    overrides = serve_overrides(
        export_folder(exported),
        tmp / "store.db",
        # the generator sends hundreds of keyless calls from one address in seconds
        "limits.public_per_minute=1000000",
        "limits.public_burst=1000000",
        # the shipped body limit (1 MiB): room for every schema-valid body the generator makes
        # (a 2,000-character comment of escaped astral characters is 24 KB)
        "limits.max_body_bytes=1048576",
    )
    # open proposals (ids 1-40), so the admin endpoints that decide one are reached (small ids
    # are what the generator tries most), not only answered 404
    store = Store(store_url)
    try:
        add_proposals(store.engine, [
            {"name": f"subject-{k}", "keywords": ["a", "b"], "size": 40, "growth": 0.1,
             "examples": [{"id": 1, "title": "an item"}],
             "window": {"start": "2026-11-01", "end": "2026-12-01"}}
            for k in range(1, 41)
        ])  # fmt: skip
    finally:
        store.close()
    overrides = [o for o in overrides if not o.startswith("store.url=")]
    overrides.append(f"store.url='{store_url}'")  # quoted: a PostgreSQL URL holds '=' and '?'
    # the saved screen index in the test's folder, not the checkout's var/ (a server store's
    # default place)
    overrides.append(f"dedup.index_dir={tmp / 'screen-index'}")
    with serving(overrides) as (port, _):
        yield f"http://127.0.0.1:{port}", tmp


def test_schemathesis_finds_no_failure_with_every_check(contract_server):
    url, tmp = contract_server
    reports = tmp / "reports"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "st"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"X-API-Key: {KEY}",
            "--max-examples",
            str(MIN_CASES),
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--seed",
            SEED,
            "--workers",
            "1",
            "--report",
            "ndjson",
            "--report-dir",
            str(reports),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,  # Schemathesis keeps a cache folder where it runs
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "No issues found" in proc.stdout, proc.stdout[-3000:]
    # every operation that takes input met the stated minimum of generated requests, over the
    # two phases that generate them (coverage: boundaries and wrong types; fuzzing: random)
    cases: dict[str, int] = collections.Counter()
    (report,) = glob.glob(str(reports / "*.ndjson"))
    for line in Path(report).read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if event and event["phase"] in ("coverage", "fuzzing"):
            cases[event["recorder"]["label"]] += len(event["recorder"]["cases"])
    # no parameters: one request says everything
    fixed = {"GET /health", "GET /metrics", "GET /tags", "GET /tags/proposals"}
    assert (
        set(cases)
        >= {
            "POST /predict",
            "POST /items",
            "GET /items",
            "GET /items/{item_id}",
            "POST /feedback",
            "GET /review",
            "POST /review/{item_id}",
        }
        | fixed
    )
    short = {op: n for op, n in cases.items() if op not in fixed and n < MIN_CASES}
    assert not short, f"fewer than {MIN_CASES} generated requests: {short}"


def test_stateful_calls_chain_through_the_declared_links(contract_server):
    """Schemathesis' state machine over the document: count the steps, and the steps that
    followed a link this API declares (not one Schemathesis inferred) with its value filled
    from the previous response."""
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck

    url, _ = contract_server
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    # as the CLI's --header: Schemathesis knows it is the key and leaves it out of a case that
    # tests a missing key
    schema.config.update(headers={"X-API-Key": KEY})
    counts: collections.Counter = collections.Counter()
    base = schema.as_state_machine()

    class Counted(base):  # type: ignore[misc, valid-type]
        def step(self, input):
            counts["steps"] += 1
            t = input.transition
            if t is not None and input.is_applied:  # a value taken from the previous answer
                counts["chained"] += 1
                if not t.is_inferred:
                    counts[t.id.split(" -> ")[1].split(" ")[-1]] += 1
            return super().step(input)

    settings = hypothesis.settings(
        max_examples=20,
        stateful_step_count=6,
        deadline=None,
        database=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    declared = ("GetItem", "ReportWrongTag", "ReviewItem")

    def enough() -> bool:
        return (
            counts["steps"] >= 80
            and counts["chained"] >= 15
            and sum(counts[k] > 0 for k in declared) >= 2
        )

    for _ in range(24):  # bounded: each run is 20 scenarios of up to 6 steps
        # The server's answers steer which rules can run, so Hypothesis' replay of a scenario can
        # take another path (Flaky); Schemathesis' own engine starts a new run then, and so do
        # we. A failed check is a FailureGroup, never Flaky, and fails this test.
        with contextlib.suppress(hypothesis.errors.Flaky):
            Counted.run(settings=settings)
        if enough():
            break
    assert enough(), counts
