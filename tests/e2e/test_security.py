"""The holes a probe found that need a real server (issue 29): uvicorn on 127.0.0.1 with the
serve config's server settings, as `mltagger serve` runs it, over a predictor with known answers.

- Finding 8: X-Forwarded-For from loopback chose the client's rate-limit bucket (uvicorn believes
  proxy headers from 127.0.0.1 by default); now only listed proxies are believed.
- Finding 9: connections that never send a request, or send its head or body a byte at a time,
  were held open for as long as the client liked; now they get 408 and are closed.
"""

from __future__ import annotations

import socket
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from mltagger.core.config import compose_config
from mltagger.serving.api import create_app
from mltagger.serving.connections import server_options
from mltagger.serving.service import Tagger
from mltagger.serving.store import Store
from tests.e2e.test_serve import on_uvicorn
from tests.fakes import FakePredictor, make_model_folder, write_screen

TIMEOUTS = ("server.header_timeout=0.6", "server.body_timeout=0.6", "server.keep_alive_timeout=0.6")


@contextmanager
def running(tmp: Path, *overrides: str):
    store = Store(f"sqlite:///{tmp / 'store.db'}")
    tagger = Tagger(
        FakePredictor(make_model_folder(tmp / "model")),
        store,
        screen_file=write_screen(tmp / "screen.json"),
    )
    cfg = compose_config("serve", [f"model_dir={tmp / 'model'}", "api_key=null", *overrides])
    try:
        with on_uvicorn(create_app(tagger, cfg), cfg) as port:
            yield port
    finally:
        store.close()


@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    """One server with 0.6 s deadlines for the slow-client tests (each connection is its own)."""
    with running(tmp_path_factory.mktemp("timed"), *TIMEOUTS) as port:
        yield port


def exchange(
    port: int, *parts: bytes, pause: float = 0.0, wait: float = 5.0
) -> tuple[bytes, float]:
    """Send `parts` with `pause` seconds between them; read until the server closes. Returns
    (what came back, seconds from connecting until the close)."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        try:
            for part in parts:
                sock.sendall(part)
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us while we were still sending: what the test expects
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return got, time.monotonic() - start


def predict(port: int, forwarded: str) -> int:
    body = b'{"items": [{"title": "Graph networks"}]}'
    head = (
        f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"X-Forwarded-For: {forwarded}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    got, _ = exchange(port, head.encode() + body)
    return int(got.split(b" ", 2)[1])


def test_a_local_client_cannot_choose_its_rate_limit_bucket(tmp_path):
    limits = ("limits.public_per_minute=1", "limits.public_burst=2")
    with running(tmp_path, *limits) as port:
        codes = [predict(port, f"203.0.113.{k}") for k in range(4)]
    assert codes == [200, 200, 429, 429]  # one client, whatever address it claims


def test_a_listed_proxy_is_believed(tmp_path):
    limits = ("limits.public_per_minute=1", "limits.public_burst=2")
    with running(tmp_path, *limits, "server.trusted_proxies=[127.0.0.1]") as port:
        codes = [predict(port, f"203.0.113.{k}") for k in range(4)]
    assert codes == [200, 200, 200, 200]  # four clients behind the proxy, a bucket each


def test_the_shipped_config_believes_no_proxy():
    options = server_options(compose_config("serve", []))
    assert options["proxy_headers"] is False and options["forwarded_allow_ips"] == ""
    assert options["header_timeout"] > 0 and options["body_timeout"] > 0


POST_HEAD = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
TRICKLE = [b"x"] * 40  # a byte every 0.1 s: data keeps coming, the request never ends


@pytest.mark.parametrize(
    ("parts", "pause", "answers"),
    [
        ((), 0.0, 0),  # connects and says nothing
        ([b"GET /health HTTP/1.1\r\n", *[b"X-A: b\r\n"] * 30], 0.1, 0),  # headers, slowly
        ([POST_HEAD, b"{"], 0.0, 0),  # a body that stops
        ([POST_HEAD, *TRICKLE], 0.1, 0),  # a body that never ends
        # the same behind a request answered first (uvicorn reads a pipelined head later)
        ([b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + POST_HEAD, *TRICKLE], 0.1, 1),
    ],
    ids=["idle", "slow-headers", "stalled-body", "trickled-body", "pipelined-trickled-body"],
)
def test_slow_clients_get_408_and_are_closed(timed, parts, pause, answers):
    got, seconds = exchange(timed, *parts, pause=pause)
    ok, _ = exchange(timed, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert got.count(b"HTTP/1.1 200") == answers, got[:400]
    assert got.endswith(
        b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
    assert seconds < 2.5, seconds  # the deadline (0.6 s), not the client, ended it
    assert ok.startswith(b"HTTP/1.1 200")  # the server goes on serving


def test_an_early_answer_is_the_only_answer(timed):
    """A request answered before its body is read (404 for no route) and a client that keeps
    sending: the body's deadline closes the connection without a second, stray answer."""
    head = b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    got, seconds = exchange(timed, head, *TRICKLE, pause=0.1)
    assert got.startswith(b"HTTP/1.1 404") and b"408" not in got, got[:400]
    assert seconds < 2.5


def test_a_kept_alive_connection_serves_requests_and_then_closes(timed):
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    got, seconds = exchange(timed, request, request, pause=0.2)
    assert got.count(b"HTTP/1.1 200") == 2 and b"408" not in got
    assert seconds < 2.5  # idle after its answers: closed by the keep-alive timeout
