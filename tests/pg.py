"""A throw-away PostgreSQL server for the suite, from the binaries on this machine.

Why our own and not pytest-postgresql: CI runs as root, `initdb` refuses root, and the plugin has
no way to run the server as another user. Here, as root, `initdb` and `pg_ctl` run as `nobody`
through `runuser`, in a folder under the system temp dir that `nobody` owns; the server listens
on a Unix socket only (no TCP port to collide with) and trusts local connections.

Where the binaries are missing the PostgreSQL runs are skipped with that reason; where they exist,
a server that does not start is an error, never a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

PG_ENV = "MLTAGGER_TEST_PG_URL"


def binaries() -> Path | None:
    """The folder with initdb and pg_ctl: on PATH, or the Debian layout."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "nobody", "--", *args] if os.geteuid() == 0 else args


@contextmanager
def server() -> Iterator[str]:
    """Start a server; yields an admin URL (database `postgres`) for `fresh_database`."""
    given = os.environ.get(PG_ENV)
    if given:  # a server someone runs already; its user must be able to create databases
        yield given
        return
    folder = binaries()
    if folder is None:
        raise FileNotFoundError("PostgreSQL binaries (initdb, pg_ctl) not found")
    base = Path(tempfile.mkdtemp(prefix="mltagger-pg-"))
    data = base / "data"
    if os.geteuid() == 0:
        shutil.chown(base, "nobody")
    os.chmod(base, 0o755)
    port = _free_port()  # names the socket file; listen_addresses='' opens no TCP port
    run = {"check": True, "capture_output": True, "text": True, "timeout": 120}
    try:
        subprocess.run(
            _as_server_user(
                [
                    *(str(folder / "initdb"), "-D", str(data), "-U", "mltagger"),
                    *("--auth=trust", "-E", "UTF8", "--no-sync"),
                ]
            ),
            **run,
        )
        options = f"-p {port} -k {base} -c listen_addresses='' -c fsync=off"
        subprocess.run(
            _as_server_user(
                [
                    *(str(folder / "pg_ctl"), "-D", str(data), "-l", str(base / "log")),
                    *("-o", options, "-w", "start"),
                ]
            ),
            **run,
        )
    except subprocess.CalledProcessError as err:
        log = (base / "log").read_text() if (base / "log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        raise RuntimeError(
            f"PostgreSQL did not start: {err.stderr or err.stdout}\n{log[-2000:]}"
        ) from None
    try:
        yield f"postgresql+psycopg://mltagger@/postgres?host={base}&port={port}"
    finally:
        subprocess.run(
            _as_server_user([str(folder / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """An empty database of its own for one test; dropped after it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
