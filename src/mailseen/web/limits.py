"""Size limits on what a client sends, enforced before it is held in memory.

Two places: the request head (request line and headers), counted by the HTTP protocol as
bytes arrive, since httptools otherwise buffers a header of any length; and the request body,
counted by a ``receive`` wrapper so that a declared ``Content-Length`` over the limit is
refused before one byte is read and a chunked body is refused as soon as it passes the limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from starlette.exceptions import HTTPException
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["MAX_API_BODY", "MAX_FORM_BODY", "MAX_HEAD_BYTES", "BodyTooLarge",
           "BoundedHttpProtocol", "limit_body"]

# As uvicorn's own h11 default and nginx's large_client_header_buffers: a browser's head with
# every cookie fits in a few KB.
MAX_HEAD_BYTES = 16 * 1024
# A raw RFC 5322 message (or a JSON draft with base64 attachments) sent through the API.
MAX_API_BODY = 50 * 1024 * 1024
# A form from the web app, attachments included.
MAX_FORM_BODY = 30 * 1024 * 1024

_HEAD_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
                   b"connection: close\r\n\r\n")

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body passes its limit. An HTTPException so that FastAPI
    re-raises it from its body parsing instead of turning it into a 400."""

    def __init__(self, limit: int) -> None:
        self.limit_mb = limit // (1024 * 1024)
        super().__init__(413, f"request body larger than {self.limit_mb} MB")


def limit_body(scope: Message, receive: Receive, limit: int) -> Receive:
    """``receive`` for one HTTP request whose body may not exceed ``limit`` bytes."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:

                async def refuse() -> Message:
                    raise BodyTooLarge(limit)

                return refuse
            break
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a limit on the request head: answers 431 and closes
    once a request's head passes MAX_HEAD_BYTES without being complete."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._head_bytes = 0
        self._in_head = True

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        # Only bytes of a head still incomplete after parsing are counted against it: a chunk
        # that completed the head may carry any amount of body.
        if self._in_head and self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self.transport.write(_HEAD_TOO_LARGE)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
