"""A request body size limit as ASGI middleware: a body over the limit is refused with 413 before
it is read into memory, whether or not the client sent Content-Length.
"""

from __future__ import annotations

import contextlib


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for bodies over the limit, before the endpoint parses them
    (declared Content-Length, or counted as a chunked body arrives).

    A chunked body is cut off inside the app's `receive`, where FastAPI catches the error and
    answers 400; that answer is swallowed here so the client learns the real reason."""

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
        started = too_large = False

        async def counted():
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                too_large = True
                raise BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if too_large:
                # The app's own answer to a body cut short (FastAPI turns the error raised by
                # `counted` into a 400): dropped, the client gets the 413 below instead.
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(BodyTooLarge):
            await self.app(scope, counted, guarded_send)
        if too_large and not started:
            await self._reject(send)

    async def _reject(self, send) -> None:
        body = b'{"detail":"request body larger than ' + str(self.max_bytes).encode() + b' bytes"}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
