"""The security probe: the payload families that found issue 29's holes, sent to a running
service on this machine, each family's result printed (docs/security.md).

    mltagger probe --url http://127.0.0.1:8000 --key ADMIN_KEY [--requests 50000]
    make security    # the same against throw-away services (SQLite and PostgreSQL)

Families (each bounded in count and time; loopback addresses only):
  methods      N requests with invented methods and paths: /metrics stays small, and the
               worker's memory (read from /proc when the worker runs here) grows < 20 MB
  links        javascript:, data: and vbscript: links: refused (422), nothing stored
  unstorable   NUL in every text field of every write, API and report form: 4xx, never 5xx
  keys         non-ASCII and wrong keys on every keyed operation: 401, never 5xx
  bodies       chunked bodies over the limit on every POST route, JSON and form: 413
  text         NFKC-expanding, invisible-only, control-only and bidi-only titles: 422
  public       keyless reads: published items only, no hidden field; /health without paths
  forged-login a decision posted with no session, then a login: shown again, never stored
  reviewer     a decision sent with another reviewer's name: stored under the key's name
  sessions     a session cookie after logging out: refused
  docs         the API docs load nothing from another site
  slow         idle, slow-header, stalled-body and pipelined slow-body connections: closed
               within --deadline s
  proxy        keyless calls claiming other addresses (X-Forwarded-For): one rate limit

Exit 0 when every family passes, 1 when one fails, 2 for a usage mistake.

Over 400 lines because the thirteen families share one small HTTP client and one report, and
read best side by side; each family is a short function.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlparse

from tqdm.auto import tqdm

from mltagger.core.errors import DataError, user_errors
from mltagger.serving.schemas import PUBLIC_ITEM_FIELDS

MEMORY_LIMIT_MB = 20.0
METRICS_LIMIT_BYTES = 100_000
DANGEROUS_LINKS = (
    "javascript:alert(document.cookie)", "JaVaScRiPt:alert(1)", " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>", "vbscript:msgbox(1)", "java\tscript:alert(1)",
    "http://bank.example@evil.example/", "http://[::1/x",
)  # fmt: skip
BAD_TITLES = (
    "\ufdfa" * 120, "\u202e\u202d", "\u200b\u2060\ufeff", "\x01\x1b\x7f", "\u3164",
    "\ufe0f\u034f\u0301", "\u00a8",
)  # fmt: skip
NON_ASCII_KEYS = ("é".encode("latin-1"), "ключ".encode(), b"\xff\xfe\x00")


@dataclass
class Family:
    """One family's outcome: requests sent and what went wrong (empty: passed)."""

    name: str
    sent: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""

    def expect(self, ok: bool, what: str) -> None:
        if not ok and len(self.failures) < 20:
            self.failures.append(what)


class Target:
    """The service under probe: a loopback host and port, an admin key, one client address."""

    def __init__(self, url: str, key: str) -> None:
        parsed = urlparse(url)
        host = parsed.hostname or ""
        try:
            loopback = ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
        except (OSError, ValueError):
            loopback = False
        if parsed.scheme != "http" or not loopback or parsed.port is None:
            raise DataError(
                f"--url {url}: give http://127.0.0.1:PORT (the probe stays on this machine)"
            )
        self.host, self.port, self.key = host, parsed.port, key

    def call(
        self,
        method: str,
        path: str,
        body: bytes | Iterable[bytes] | None = None,
        headers: dict | None = None,
        *,
        key: bool | bytes = False,
    ) -> tuple[int, dict, bytes]:
        """(status, headers, body); with `key` the admin key (or the raw bytes given)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        sent = dict(headers or {})
        if key is True:
            sent["X-API-Key"] = self.key
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in sent.items():
                conn.putheader(name, value)
            if isinstance(key, bytes):
                conn.putheader("X-API-Key", key)
            chunked = body is not None and not isinstance(body, bytes)
            if isinstance(body, bytes):
                conn.putheader("Content-Length", str(len(body)))
            if chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            if isinstance(body, bytes):
                conn.send(body)
            elif chunked:
                for part in body:
                    conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                conn.send(b"0\r\n\r\n")
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            conn.close()

    def json(
        self, method: str, path: str, payload, *, key: bool | bytes = False, headers=None
    ) -> tuple[int, dict, dict]:
        """A JSON call: (status, the answer as JSON or {}, headers)."""
        body = None if payload is None else json.dumps(payload).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        status, got, out = self.call(method, path, body, sent, key=key)
        return status, (json.loads(out) if out.startswith(b"{") else {}), got

    def add(self, title: str) -> int:
        status, out, _ = self.json("POST", "/items", {"title": title}, key=True)
        if status != 201:
            raise DataError(f"POST /items with the admin key answered {status}: {out}")
        return int(out["item"]["id"])

    def count(self) -> int:
        return int(self.json("GET", "/items?limit=1", None, key=True)[1].get("total", -1))


class Browser:
    """Just enough of a browser for the pages: cookies, and the form token of the last page."""

    def __init__(self, target: Target) -> None:
        self.target, self.cookies = target, {}

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = None
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urlencode(form).encode()
        status, got, out = self.target.call(method, path, body, headers)
        for name, value in re.findall(r"(mltagger_\w+)=([^;]*)", got.get("set-cookie", "")):
            self.cookies[name] = value
        return status, out.decode("utf-8", "replace")

    def login(self, key: str, **pending: str) -> tuple[int, str]:
        _, page = self.request("GET", "/ui/login")
        form = {"csrf": token(page), "key": key, "next": "/ui/review"}
        form.update({f"pending_{k}": v for k, v in pending.items()})
        return self.request("POST", "/ui/login", form)


def token(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    return found.group(1) if found else ""


def server_error(status: int) -> bool:
    return status >= 500


# -- the families ----------------------------------------------------------------------------


def methods(t: Target, f: Family, requests: int) -> None:
    """Invented methods and paths on one kept-alive connection each 1,000 requests."""
    before = rss_mb(t)
    sock, sent_on = None, 0
    for k in tqdm(range(requests), desc="methods", unit="req", leave=False, mininterval=2):
        if sock is None or sent_on >= 1000:
            if sock is not None:
                sock.close()
            sock, sent_on = socket.create_connection((t.host, t.port), timeout=30), 0
        sock.sendall(f"M{k:x}X{k * 7919:x} /p/{k} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status = read_answer(sock)
        sent_on += 1
        f.sent += 1
        f.expect(status in (404, 405), f"invented method {k}: {status}")
    if sock is not None:
        sock.close()
    size = len(t.call("GET", "/metrics")[2])
    after = rss_mb(t)
    f.expect(size < METRICS_LIMIT_BYTES, f"/metrics is {size} bytes")
    if before is not None and after is not None:
        f.note = f"worker memory {before:.0f} -> {after:.0f} MB, /metrics {size / 1000:.0f} KB"
        f.expect(after - before < MEMORY_LIMIT_MB, f"memory grew {after - before:.1f} MB")
    else:
        f.note = f"/metrics {size / 1000:.0f} KB (worker memory: not on this machine)"


def read_answer(sock: socket.socket) -> int:
    """Read one answer (Content-Length bodies) from a kept-alive socket; its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += _more(sock)
    head, _, rest = data.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: (\d+)", head.lower())
    if length is None:
        raise ConnectionError(f"an answer without a length: {head[:120]!r}")
    while len(rest) < int(length.group(1)):
        rest += _more(sock)
    return int(head.split(b" ", 2)[1])


def _more(sock: socket.socket) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the service closed the connection before answering")
    return chunk


def rss_mb(t: Target) -> float | None:
    """The worker's resident memory, when /health (admin) names a process on this machine."""
    _, health, _ = t.json("GET", "/health", None, key=True)
    pid = health.get("worker_pid")
    try:
        with open(f"/proc/{int(pid)}/status") as status:
            kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    except (TypeError, ValueError, OSError, StopIteration):
        return None
    return kb / 1024


def links(t: Target, f: Family) -> None:
    before = t.count()
    for link in DANGEROUS_LINKS:
        for path, body in (
            ("/items", {"title": "Graph networks", "url": link}),
            ("/predict", {"items": [{"title": "Graph networks", "url": link}]}),
        ):
            status, _, _ = t.json("POST", path, body, key=True)
            f.sent += 1
            f.expect(status == 422, f"{path} url={link!r}: {status}")
    f.expect(t.count() == before, "an item with a dangerous link was stored")


def unstorable(t: Target, f: Family, item: int) -> None:
    before = t.count()
    bodies = [
        ("/items", {"title": "Graph\x00networks"}),
        ("/items", {"title": "ok", "description": "\x00"}),
        ("/predict", {"items": [{"title": "x\x00y"}]}),
        ("/feedback", {"item_id": item, "correct_tag": "mlops", "comment": "a\x00"}),
        (f"/review/{item}", {"tag": "mlops", "reviewer": "\x00"}),
        ("/items", {"title": "lone \ud800 surrogate"}),
    ]
    for path, body in bodies:
        for key in (True, False):
            status, _, _ = t.json("POST", path, body, key=key)
            f.sent += 1
            f.expect(400 <= status < 500, f"{path} {sorted(body)}: {status}")
    browser = Browser(t)
    _, page = browser.request("GET", f"/ui/item/{item}")
    status, _ = browser.request(
        "POST", f"/ui/item/{item}", {"csrf": token(page), "correct_tag": "mlops", "comment": "\x00"}
    )
    f.sent += 2
    f.expect(400 <= status < 500, f"report form with NUL: {status}")
    f.expect(t.count() == before, "something was stored from a refused request")


def keys(t: Target, f: Family, item: int) -> None:
    calls = [
        ("POST", "/predict", {"items": [{"title": "x"}]}),
        ("POST", "/feedback", {"item_id": item, "correct_tag": "mlops"}),
        ("POST", "/items", {"title": "x"}),
        ("GET", "/review", None),
        ("POST", f"/review/{item}", {"tag": "mlops"}),
        ("GET", "/items", None),
    ]
    for method, path, body in calls:
        for raw in (*NON_ASCII_KEYS, b"wrong-key"):
            status, _, _ = t.json(method, path, body, key=raw)
            f.sent += 1
            # 400: the HTTP parser refuses a header holding NUL before the app sees it
            f.expect(status in (400, 401, 429), f"{method} {path} key={raw!r}: {status}")


def bodies(t: Target, f: Family, item: int, max_body: int) -> None:
    # chunked (no Content-Length), one 64 KB chunk past the limit: all of it is sent before the
    # server can answer, so the answer is read, never cut off by the close that follows it
    big = [b"comment=" + b"a" * 65528] * (max_body // 65536 + 1)
    routes = [
        ("/predict", "application/json"), ("/items", "application/json"),
        ("/feedback", "application/json"), (f"/review/{item}", "application/json"),
        ("/ui/login", "application/x-www-form-urlencoded"),
        (f"/ui/item/{item}", "application/x-www-form-urlencoded"),
        (f"/ui/review/{item}", "application/x-www-form-urlencoded"),
    ]  # fmt: skip
    for path, kind in routes:
        try:
            status, _, _ = t.call("POST", path, iter(big), {"Content-Type": kind}, key=True)
        except (BrokenPipeError, ConnectionResetError) as err:
            status = f"closed with no answer ({err})"
        f.sent += 1
        f.expect(status == 413, f"chunked body over the limit to {path}: {status}")


def text(t: Target, f: Family) -> None:
    before = t.count()
    for title in BAD_TITLES:
        status, _, _ = t.json("POST", "/items", {"title": title}, key=True)
        f.sent += 1
        f.expect(status == 422, f"title {title[:12]!r}…: {status}")
    f.expect(t.count() == before, "a refused title was stored")


def public(t: Target, f: Family) -> None:
    hidden = set()
    for path in ("/items?limit=50", "/items?status=active&limit=50"):
        status, page, _ = t.json("GET", path, None)
        f.sent += 1
        f.expect(status == 200, f"GET {path}: {status}")
        for row in page.get("items", []):
            hidden |= set(row) - set(PUBLIC_ITEM_FIELDS)
            f.expect(row.get("status") == "active", f"item {row.get('id')} is {row.get('status')}")
    f.expect(not hidden, f"public fields beyond the published ones: {sorted(hidden)}")
    for status_name in ("duplicate", "rejected"):
        status, _, _ = t.json("GET", f"/items?status={status_name}", None)
        f.sent += 1
        f.expect(status == 403, f"GET /items?status={status_name} without a key: {status}")
    _, health, _ = t.json("GET", "/health", None)
    f.sent += 1
    f.expect(
        set(health) <= {"status", "model_version", "labels"}, f"public /health: {sorted(health)}"
    )


def forged_login(t: Target, f: Family) -> None:
    item = t.add(f"Probe item for a forged decision {time.time_ns()}")
    status, page = Browser(t).request(
        "POST", f"/ui/review/{item}", {"decision": "reject", "seen_review": "0"}
    )
    pending = dict(re.findall(r'name="pending_(\w+)" value="([^"]*)"', page))
    status, page = Browser(t).login(t.key, **pending)
    f.sent += 4
    f.expect("Store this decision?" in page, f"login with a pending decision: {status}")
    _, got, _ = t.json("GET", f"/items/{item}", None, key=True)
    f.expect(got.get("status") == "active", f"the forged decision was applied: {got.get('status')}")


def reviewer(t: Target, f: Family) -> None:
    item = t.add(f"Probe item for a reviewer's name {time.time_ns()}")
    status, _, _ = t.json("POST", f"/review/{item}", {"tag": "mlops", "reviewer": "x-spoofed-name"},
                          key=True)  # fmt: skip
    t.json("POST", "/feedback", {"item_id": item, "correct_tag": "other"})  # back in the queue
    browser = Browser(t)
    browser.login(t.key)
    _, page = browser.request("GET", "/ui/review?order=reported")
    f.sent += 5
    f.expect(status == 200, f"review with a name: {status}")
    f.expect("x-spoofed-name" not in page, "the name the client sent is shown as the reviewer")


def sessions(t: Target, f: Family) -> None:
    browser = Browser(t)
    status, _ = browser.login(t.key)
    f.expect(status == 303 and "mltagger_session" in browser.cookies, f"login: {status}")
    session = dict(browser.cookies)
    _, page = browser.request("GET", "/ui/review")
    status, _ = browser.request("POST", "/ui/logout", {"csrf": token(page)})
    f.expect(status == 303, f"logout: {status}")
    browser.cookies = session  # the old cookie, kept by someone
    status, _ = browser.request("GET", "/ui/review")
    f.sent += 5
    f.expect(status == 303, f"a logged-out session still opens the queue: {status}")


def docs(t: Target, f: Family) -> None:
    _, _, page = t.call("GET", "/docs")
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.decode())
    f.sent += 1
    outside = [s for s in sources if "://" in s or s.startswith("//")]
    f.expect(bool(sources) and not outside, f"/docs loads {outside or 'nothing'}")


def slow(t: Target, f: Family, deadline: float) -> None:
    post = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    openings = {
        "idle": [],
        "slow headers": [b"GET /health HTTP/1.1\r\n"] + [b"X-Slow: 1\r\n"] * 600,
        "stalled body": [post + b"{"],
        # behind a request answered first (a server may read a pipelined head later)
        "pipelined body": [b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + post] + [b"x"] * 600,
    }
    results: dict[str, float] = {}

    def hold(name: str, parts: list[bytes]) -> None:
        """Send the parts slowly (never past deadline + 5 s), then wait for the close."""
        start = time.monotonic()
        try:
            with socket.create_connection((t.host, t.port), timeout=deadline + 5) as sock:
                for part in parts:
                    if time.monotonic() - start > deadline + 5:
                        break
                    sock.sendall(part)
                    time.sleep(0.5 if len(parts) > 1 else 0)
                while sock.recv(4096):
                    pass
        except OSError:
            pass
        results[name] = time.monotonic() - start

    threads = [threading.Thread(target=hold, args=item) for item in openings.items()]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    f.sent += len(openings)
    f.note = ", ".join(f"{k} closed after {v:.1f} s" for k, v in results.items())
    for name, seconds in results.items():
        f.expect(seconds <= deadline, f"{name}: open {seconds:.1f} s (deadline {deadline} s)")


def proxy(t: Target, f: Family, burst: int) -> None:
    codes = []
    for k in range(burst + 5):
        status, _, _ = t.json(
            "POST", "/predict", {"items": [{"title": "x"}]},
            headers={"X-Forwarded-For": f"198.51.100.{k % 250}"},
        )  # fmt: skip
        codes.append(status)
    f.sent += len(codes)
    f.expect(429 in codes, f"no 429 in {len(codes)} keyless calls from 'different' addresses")


# -- running them ----------------------------------------------------------------------------


FAMILIES = (
    "methods", "links", "unstorable", "keys", "bodies", "text", "public", "forged-login",
    "reviewer", "sessions", "docs", "slow", "proxy",
)  # fmt: skip


def run_probe(
    url: str, key: str, *, requests: int = 50_000, deadline: float = 15.0, burst: int = 20,
    max_body: int = 1_048_576, only: Sequence[str] = FAMILIES,
) -> list[Family]:  # fmt: skip
    """Every family named in `only`, in order; the proxy family last (it spends this client's
    keyless rate limit)."""
    t = Target(url, key)
    item = t.add(f"Probe item {time.time_ns()}")
    steps: dict[str, Callable[[Family], None]] = {
        "methods": lambda f: methods(t, f, requests),
        "links": lambda f: links(t, f),
        "unstorable": lambda f: unstorable(t, f, item),
        "keys": lambda f: keys(t, f, item),
        "bodies": lambda f: bodies(t, f, item, max_body),
        "text": lambda f: text(t, f),
        "public": lambda f: public(t, f),
        "forged-login": lambda f: forged_login(t, f),
        "reviewer": lambda f: reviewer(t, f),
        "sessions": lambda f: sessions(t, f),
        "docs": lambda f: docs(t, f),
        "slow": lambda f: slow(t, f, deadline),
        "proxy": lambda f: proxy(t, f, burst),
    }
    out = []
    for name in [n for n in FAMILIES if n in only]:
        family = Family(name)
        start = time.monotonic()
        steps[name](family)
        family.seconds = time.monotonic() - start
        out.append(family)
    return out


def format_report(families: Sequence[Family]) -> str:
    lines = [f"{'family':<13} {'requests':>8} {'seconds':>8}  result"]
    for f in families:
        verdict = "pass" if not f.failures else f"FAIL: {'; '.join(f.failures[:3])}"
        lines.append(f"{f.name:<13} {f.sent:>8} {f.seconds:>8.1f}  {verdict}")
        if f.note:
            lines.append(f"{'':<31}{f.note}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """`mltagger probe --url URL --key KEY`: the payload families against a running service."""
    parser = argparse.ArgumentParser(prog="mltagger probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="a loopback service")
    parser.add_argument(
        "--key",
        default=os.environ.get("MLTAGGER_API_KEY"),
        help="an admin key (or $MLTAGGER_API_KEY)",
    )
    parser.add_argument("--requests", type=int, default=50_000, help="invented-method requests")
    parser.add_argument(
        "--deadline",
        type=float,
        default=15.0,
        help="seconds a slow connection may stay open (the server's timeouts and a margin)",
    )
    parser.add_argument("--burst", type=int, default=20, help="the service's limits.public_burst")
    parser.add_argument(
        "--max-body", type=int, default=1_048_576, help="the service's limits.max_body_bytes"
    )
    parser.add_argument("--only", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("--key: give an admin key (mltagger keys create NAME --role admin)")
    if min(args.requests, args.deadline, args.burst, args.max_body) <= 0:
        parser.error("--requests, --deadline, --burst and --max-body must be positive")
    with user_errors():
        try:
            families = run_probe(
                args.url, args.key, requests=args.requests, deadline=args.deadline,
                burst=args.burst, max_body=args.max_body, only=args.only,
            )  # fmt: skip
        except (TimeoutError, ConnectionRefusedError) as err:
            raise DataError(f"--url {args.url}: {err} (is `mltagger serve` running?)") from None
    print(format_report(families))
    return 1 if any(f.failures for f in families) else 0
