"""The optional orchestrator path: Dagster, in its own virtual environment (`make orchestrator`),
runs the cycle job with a local executor against a real store and records its run; the job calls
`mltagger cycle` as cron would. Slow (in `make test-all`, which builds .venv-dagster first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

DAGSTER = REPO / ".venv-dagster" / "bin" / "dagster"
pytestmark = pytest.mark.slow


@pytest.mark.skipif(not DAGSTER.exists(), reason="no .venv-dagster (make orchestrator)")
def test_dagster_runs_the_cycle_job_and_keeps_its_history(tmp_path, trained):
    store = tmp_path / "store.db"
    env = {
        **os.environ,
        "MLTAGGER_BIN": str(Path(sys.executable).parent / "mltagger"),
        "MLTAGGER_HOME": str(REPO),
        "MLTAGGER_ARGS": f"store.url=sqlite:///{store} model_dir={trained / 'run' / 'model'} "
        f"cycle.folder={tmp_path / 'cycles'}",
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    (tmp_path / "dagster").mkdir()
    proc = subprocess.run(
        [str(DAGSTER), "job", "execute", "-f", str(REPO / "deploy/dagster/definitions.py"),
         "-j", "cycle_job"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "RUN_SUCCESS" in out and "no new labels since the last cycle" in out
    assert list((tmp_path / "dagster").rglob("*.db"))  # the run history Dagster keeps
    assert store.is_file()  # the job reached the store through mltagger cycle
