"""The HTTP server's side of the service's defences: uvicorn's settings from the serve config's
`server` section, and the deadlines uvicorn's h11 protocol lacks.

Why a protocol of our own: uvicorn closes a kept-alive connection that stays idle, but nothing
bounds a connection that never sends a request, sends its headers a byte at a time, or stops in
the middle of its body; each such connection holds a socket and a slot for as long as the client
likes (slowloris). `TimedH11Protocol` gives every request two deadlines: its head (request line
and headers) within `header_timeout` seconds of the connection or of its first byte, its body
within `body_timeout` seconds of the head. Past one, the client gets 408 and the connection is
closed. A deployment still puts a reverse proxy with timeouts of its own in front
(docs/security.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class ServeConfig(uvicorn.Config):
    """uvicorn's config and the two deadlines; a class of its own so the worker processes
    (started by pickling the config) receive them too."""

    def __init__(self, app: Any, *, header_timeout: float, body_timeout: float, **kw: Any):
        super().__init__(app, http=TimedH11Protocol, **kw)
        self.header_timeout = float(header_timeout)
        self.body_timeout = float(body_timeout)


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's head and body (module
    docstring). Its settings come from a `ServeConfig`; any other config gets 10 s and 30 s."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.header_timeout = float(getattr(config, "header_timeout", 10.0))
        self.body_timeout = float(getattr(config, "body_timeout", 30.0))
        self._deadline: asyncio.TimerHandle | None = None
        self._waiting_for = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("head", self.header_timeout)  # a connection that never speaks is closed too

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm("head", self.header_timeout)  # the next request on a kept-alive connection
        super().data_received(data)

    def handle_events(self) -> None:
        # Here, not in data_received: uvicorn also parses a pipelined request's head after the
        # answer to the one before it (on_response_complete), with no new data arriving.
        super().handle_events()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow(self) -> None:
        """Move the deadline on as the request arrives: from its head to its body, then off."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._waiting_for != "body":
                self._arm("body", self.body_timeout)
        elif state is not h11.IDLE or self._waiting_for == "body":
            self._disarm()  # the whole request is in, or the connection moved on or is ending

    def _arm(self, what: str, seconds: float) -> None:
        self._disarm()
        self._waiting_for = what
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._waiting_for = None, ""

    def _expired(self) -> None:
        what, self._deadline = self._waiting_for, None
        self.logger.info("closing a connection that took too long to send its request %s", what)
        # A head's deadline: nothing has answered this request yet. A body's: the app may have
        # answered already (e.g. 413 before reading it all); then one answer is all it gets.
        answered = what == "body" and self.cycle is not None and self.cycle.response_started
        if not answered and not self.transport.is_closing():
            self.transport.write(TIMED_OUT)
        self.transport.close()


def check_trusted(addresses: list[str]) -> list[str]:
    """The proxies' addresses (an IP or a network such as 10.0.0.0/8), each checked."""
    for address in addresses:
        ipaddress.ip_network(str(address), strict=False)  # ValueError names the bad one
    return [str(a) for a in addresses]


def server_options(cfg: Any) -> dict[str, Any]:
    """`ServeConfig` keyword arguments from the serve config's `server` section.

    X-Forwarded-For and -Proto are believed only from the listed proxies, and only when some are
    listed: uvicorn's own default believes them from 127.0.0.1, so any local client could choose
    the address its rate limit is counted under."""
    server = cfg.get("server") or {}
    trusted = check_trusted(list(server.get("trusted_proxies") or []))
    return {
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": ",".join(trusted) if trusted else "",
        "timeout_keep_alive": float(server.get("keep_alive_timeout", 5)),
        "header_timeout": float(server.get("header_timeout", 10)),
        "body_timeout": float(server.get("body_timeout", 30)),
        "limit_concurrency": server.get("max_connections"),
    }
