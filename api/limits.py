"""Request body size limit: 413 with a JSON error, decided before a large body is read into memory.

A body whose `Content-Length` is over the limit is refused from the header alone. The answer
still has to reach the client: an HTTP/1.1 client that does not wait for `100 Continue` keeps
sending, and a server that closes a socket with unread bytes in it makes the kernel reset the
connection, so the client sees a broken pipe instead of the 413. So the body is first read and
thrown away, chunk by chunk (never held), up to `DRAIN_LIMIT` bytes or `DRAIN_TIMEOUT_S`; a
client that sent `Expect: 100-continue` gets the 413 at once and sends nothing.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DRAIN_LIMIT = 256 << 20  # a larger body is refused without reading it (the client may see a reset)
DRAIN_TIMEOUT_S = 30.0


class BodyTooLarge(HTTPException):
    """Raised from `receive`; FastAPI re-raises HTTPExceptions met while reading the body."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"request body larger than {max_bytes} bytes")


class BodySizeLimit:
    """Refuses bodies over `max_bytes`: by Content-Length up front, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is None and b"transfer-encoding" not in headers:  # no body (a GET): nothing to watch
            await self.app(scope, receive, send)
            return
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            if length.isdigit() and headers.get(b"expect", b"").lower() != b"100-continue" and int(length) <= DRAIN_LIMIT:
                await _drain(receive)
            await self._refuse(send, 413 if length.isdigit() else 400)
            return
        seen = 0
        started = False
        more_body = True

        async def limited_receive() -> Message:
            nonlocal seen, more_body
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                more_body = message.get("more_body", False)
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                if more_body:
                    await _drain(receive, DRAIN_LIMIT - seen)
                await self._refuse(send, 413)

    async def _refuse(self, send: Send, status: int) -> None:
        detail = (f"request body larger than {self.max_bytes} bytes" if status == 413 else "invalid Content-Length header")
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, limit: int = DRAIN_LIMIT) -> None:
    """Read the rest of the request body and drop it, within `limit` bytes and DRAIN_TIMEOUT_S."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    read = 0
    while read <= limit:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), left)
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":
            return
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return
