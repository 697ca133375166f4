"""A pixel-only HTTP/1.1 server for dedicated pixel nodes (`mailseen pixel`).

The pixel path is mailseen's busiest by far and needs none of what a general ASGI server
does per request. This server parses requests with httptools (the parser uvicorn uses), hands
each to the same :class:`PixelApp` the full server mounts at ``/t/``, and writes the answer
straight to the socket: keep-alive, pipelining in order, nothing else. Anything that is not
``/t/`` gets a 404.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections import deque
from collections.abc import MutableMapping
from typing import Any

import httptools
import uvloop

from ..services.classification import Judge
from ..services.instance import Instance
from ..services.recorder import ViewRecorder
from .limits import MAX_HEAD_BYTES
from .pixel import PixelApp

__all__ = ["PixelProtocol", "run_pixel_node", "serve_pixels"]

log = logging.getLogger(__name__)

_REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
            431: b"Request Header Fields Too Large"}
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


class PixelProtocol(asyncio.Protocol):
    def __init__(self, app: PixelApp) -> None:
        self.app = app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.queue: deque[MutableMapping[str, Any]] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.closing = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1]) if isinstance(peer, tuple) else None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400)
        except httptools.HttpParserError:
            self._fail(400)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url, self.headers, self.header_bytes = b"", [], 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self._count(len(name) + len(value))

    def on_message_complete(self) -> None:
        if self.closing:
            return
        path = httptools.parse_url(self.url).path.decode("latin-1")
        self.queue.append({
            "type": "http", "method": self.parser.get_method().decode("latin-1"),
            "path": path, "headers": self.headers, "client": self.peer,
            "keep_alive": self.parser.should_keep_alive(),
        })
        if self.worker is None or self.worker.done():
            self.worker = asyncio.get_running_loop().create_task(self._drain())

    # -- answering -------------------------------------------------------------------------

    def _count(self, n: int) -> None:
        self.header_bytes += n
        if self.header_bytes > MAX_HEAD_BYTES:
            self._fail(431)
            raise httptools.HttpParserError("headers too large")

    def _fail(self, status: int) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close"
                                 b"\r\n\r\n" % (status, _REASONS[status]))
            self.transport.close()
        self.closing = True

    async def _drain(self) -> None:
        """Answer queued requests in order (pipelining), one at a time."""
        while self.queue and not self.closing:
            scope = self.queue.popleft()
            keep_alive = scope.pop("keep_alive")
            if not scope["path"].startswith("/t/"):
                out = [_NOT_FOUND]
            else:
                out = []
                await self.app(scope, _no_body, _Collect(out, keep_alive))
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(b"".join(out))
            if not keep_alive:
                self.transport.close()
                self.closing = True


async def _no_body() -> MutableMapping[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Collect:
    """The ASGI ``send`` of one request: turns its messages into HTTP/1.1 bytes."""

    __slots__ = ("keep_alive", "out")

    def __init__(self, out: list[bytes], keep_alive: bool) -> None:
        self.out = out
        self.keep_alive = keep_alive

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status = message["status"]
            lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
            lines += [name + b": " + value + b"\r\n" for name, value in message["headers"]]
            if not self.keep_alive:
                lines.append(b"connection: close\r\n")
            lines.append(b"\r\n")
            self.out.append(b"".join(lines))
        elif message["type"] == "http.response.body":
            self.out.append(message.get("body", b""))


async def serve_pixels(app: PixelApp, host: str, port: int, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: PixelProtocol(app), host, port, backlog=2048)
    log.info("serving pixels on %s:%d", host, port)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def run_pixel_node(instance: Instance, host: str, port: int) -> None:
    """Run a pixel-only node until SIGTERM/SIGINT: the pixel endpoint and its recorder,
    nothing else. Pending views are written before it exits."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        recorder = ViewRecorder(instance.store, Judge(instance.settings.data_dir))
        await recorder.start()
        app = PixelApp(instance.signer, recorder, instance.settings.trusted_proxies)
        try:
            await serve_pixels(app, host, port, stop)
        finally:
            await recorder.stop()
            log.info("stopped: pending views written")

    uvloop.run(main())
