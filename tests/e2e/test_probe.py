"""The security probe (`mltagger probe`, `make security`) against real services: every family
passes. The full probe (50,000 invented-method requests; memory and /metrics size measured in
the service's own process; SQLite and PostgreSQL) is `slow`: `make security` and `make test-all`
run it. A small probe runs in `make test`, so the probe itself never rots."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from mltagger.benchmarks.probe import FAMILIES, format_report, run_probe
from tests.e2e.test_serve import free_port

KEY = "probe-admin-key"
REPO = Path(__file__).resolve().parents[2]
# short server timeouts, so the slow-client family takes seconds
FAST = ("server.header_timeout=1", "server.body_timeout=1", "server.keep_alive_timeout=1")


@contextmanager
def service(tmp: Path, store_url: str, *overrides: str):
    """tests/e2e/probe_server.py in a process of its own: its URL."""
    port = free_port()
    log = (tmp / "service.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.probe_server", str(tmp), str(port), store_url, KEY,
         *overrides],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, (tmp / "service.log").read_text()[-3000:]
            assert time.time() < deadline, "the probe's service did not start"
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def probe(url: str, **kw) -> list:
    families = run_probe(url, KEY, deadline=4.0, **kw)
    print("\n" + format_report(families))
    return families


def test_a_small_probe_passes_every_family(tmp_path):
    with service(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", *FAST) as url:
        families = probe(url, requests=300)
    assert [f.name for f in families] == list(FAMILIES)
    assert [(f.name, f.failures) for f in families if f.failures] == []
    assert all(f.sent > 0 for f in families)


@pytest.mark.slow
def test_the_full_probe_passes_on_each_store(store_url, tmp_path):
    """`make security`: 50,000 invented methods and paths grow the worker by < 20 MB and keep
    /metrics < 100 KB; every other family passes; on SQLite and on PostgreSQL."""
    with service(tmp_path, store_url, *FAST) as url:
        families = probe(url, requests=50_000)
    methods = next(f for f in families if f.name == "methods")
    assert "worker memory" in methods.note  # measured, not skipped
    assert [(f.name, f.failures) for f in families if f.failures] == []
