"""What bounds a request: a body size limit as ASGI middleware (a body over the limit is refused
with 413 before it is read into memory, whether or not the client sent Content-Length) and a
per-client rate limit for the calls the public may make without a key.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict

from fastapi import HTTPException


class BodyTooLarge(HTTPException):
    """Raised inside the app's `receive` when a body grows past the limit. An HTTPException, so
    whatever reads the body (FastAPI's JSON parsing or a page's form parser) ends in the app's
    own 413 answer rather than a 400 or a 500."""

    def __init__(self, max_bytes: int) -> None:
        # The connection stays open and the rest of the body is read and dropped: closing at
        # once would reset a client still sending, which then never reads its 413 (seen with
        # http.client). The body deadline (serving/connections.py) bounds how long that lasts.
        super().__init__(413, f"request body larger than {max_bytes} bytes")


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, before the endpoint parses them: at once
    for a declared Content-Length, else as a chunked body arrives (`BodyTooLarge` from the
    app's `receive`)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)

    async def _reject(self, send) -> None:
        body = json.dumps({"detail": BodyTooLarge(self.max_bytes).detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class RateLimiter:
    """Requests per client and minute for calls made without a key (a token bucket each:
    `per_minute` refill, bursts up to `burst`).

    Held in the worker's memory: with N workers a client gets at most N times the rate, which is
    the bound documented for the public endpoints. At most `max_clients` buckets are kept (the
    oldest go first), so a flood of addresses cannot grow memory without bound."""

    def __init__(self, per_minute: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate = float(per_minute) / 60.0
        self.burst = float(burst)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, client: str, now: float | None = None) -> float:
        """0 when the request may go on; otherwise the seconds until it may (Retry-After)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / self.rate if self.rate > 0 else float("inf")
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return wait
