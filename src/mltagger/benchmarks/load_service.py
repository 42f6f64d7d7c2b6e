"""The processes of a load test: a free loopback port, `mltagger serve` in its own process group,
waiting for its /health, and the prefilled store each service starts from (`load.py` drives
them; apart so that the driver reads as the measurement it is)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mltagger.core.errors import DataError
from mltagger.core.paths import project_root
from mltagger.screen.bench_data import load_bench
from mltagger.screen.screening import fill_store
from mltagger.serving.store import Store

REPO = project_root()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Nothing listens there (uvicorn reuses an address in TIME_WAIT, so a bind test is wrong)."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def last_line(path: Path) -> str:
    """The last non-blank line of a log: usually the error that ended the process."""
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def wait_healthy(url: str, timeout: float, proc: subprocess.Popen | None, log: Path | None):
    """GET /health until it answers 200; a service that exits first is a one-line error."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            rc = proc.returncode
            how = f"was stopped by signal {-rc}" if rc < 0 else f"exited with code {rc}"
            why = last_line(log) if log else ""
            raise DataError(f"the service {how} before answering /health: {why} (log: {log})")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                return json.loads(resp.read())
        except (OSError, urllib.error.URLError, ValueError):
            time.sleep(0.3)
    where = f" (log: {log})" if log else ""
    raise DataError(f"no answer from {url}/health in {timeout:.0f}s{where}")


def prefill(db: Path, size: int) -> None:
    """`size` stored items (the duplicate benchmark's ML store: real, distinct items) with
    their screen sketches, so the service's duplicate search runs over a store of that size."""
    items = load_bench().stores["ml"][:size]
    store = Store(f"sqlite:///{db}")
    fill_store(store, items)
    store.close()


def copy_store(template: Path | None, db: Path) -> None:
    """A fresh store per worker count: a copy of the prefilled file (with any WAL beside it)."""
    if template is None:
        return
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{template}{suffix}")
        if src.exists():
            shutil.copyfile(src, f"{db}{suffix}")


class Service:
    """`mltagger serve` in its own process group, so stopping it also stops its workers."""

    def __init__(self, overrides: list[str], log: Path) -> None:
        self.log = log
        self._log_file = open(log, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mltagger", "serve", *overrides],
            cwd=REPO,
            env={**os.environ, "MLTAGGER_ROOT": str(REPO)},
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log_file.close()
