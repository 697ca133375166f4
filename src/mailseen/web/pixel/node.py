"""A pixel-only HTTP/1.1 server for dedicated pixel nodes (`mailseen pixel`).

The pixel path is mailseen's busiest by far and needs none of what a general ASGI server
does per request. This server parses requests with httptools (the parser uvicorn uses), hands
each to the same :class:`PixelApp` the full server mounts at ``/t/``, and writes the answer
straight to the socket: keep-alive, pipelining in order, nothing else. Anything that is not
``/t/`` gets a 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections import deque

import httptools
import uvloop

from ...clock import SYSTEM, Clock, wait
from ...core.pixel import GIF
from ...services.instance import Instance
from ...services.recorder import Commit
from ..limits import MAX_HEAD_BYTES
from .endpoint import IMAGE_HEADERS, PixelApp

__all__ = ["IDLE_TIMEOUT", "Connections", "PixelProtocol", "run_pixel_node", "serve_pixels"]

log = logging.getLogger(__name__)

def _response(status: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
              close: bool) -> bytes:
    lines = [b"HTTP/1.1 " + status + b"\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    if close:
        lines.append(b"connection: close\r\n")
    return b"".join(lines) + b"\r\n" + body


# Every answer this server gives, built once: (keep-alive, closing).
_IMAGE = tuple(_response(b"200 OK", IMAGE_HEADERS, GIF, c) for c in (False, True))
_IMAGE_HEAD = tuple(_response(b"200 OK", IMAGE_HEADERS, b"", c) for c in (False, True))
_NOT_FOUND = tuple(_response(b"404 Not Found", [(b"content-length", b"0")], b"", c)
                   for c in (False, True))
_NOT_ALLOWED = tuple(_response(b"405 Method Not Allowed", [
    (b"allow", b"GET, HEAD"), (b"content-length", b"0")], b"", c) for c in (False, True))
_FAILED = {400: _response(b"400 Bad Request", [(b"content-length", b"0")], b"", True),
           431: _response(b"431 Request Header Fields Too Large", [(b"content-length", b"0")],
                          b"", True)}


# Pipelined requests waiting for their answers before a connection is no longer read from.
_MAX_PENDING = 64
# Seconds a connection may sit without a complete request before it is closed: idle keep-alive
# connections, and heads sent a byte at a time, would otherwise hold sockets forever.
IDLE_TIMEOUT = 10.0


class Connections:
    """The node's open connections and a coarse clock for closing idle ones.

    A request stamps its connection with the current tick (an attribute read, not a clock
    call); the sweeper advances the tick every half timeout and closes connections three
    ticks old with nothing in hand: two full ticks have passed, so a connection idles between
    one and one and a half timeouts. One that is still open a tick after being closed (its
    client reads nothing, so the close cannot flush) is aborted. The ticks come from
    ``clock``.
    """

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT, clock: Clock = SYSTEM) -> None:
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.tick = 0
        self.open: set[PixelProtocol] = set()

    async def sweep(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await wait(self.clock, self.idle_timeout / 2, stop)
            self.tick += 1
            for conn in [c for c in self.open if self.tick - c.active_tick >= 3]:
                conn.close_if_idle()


class PixelProtocol(asyncio.Protocol):
    """One connection. Each request is answered from httptools' callbacks, without a task:
    a genuine hit's view goes to the recorder and its answer waits in ``pending`` until the
    view is committed; answers leave in request order (pipelining)."""

    def __init__(self, app: PixelApp, connections: Connections) -> None:
        self.app = app
        self.connections = connections
        self.active_tick = connections.tick
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.in_head = True  # between a request's first byte and the end of its headers
        self.head_bytes = 0  # bytes received while in the head (bounds httptools' buffer)
        self.head_size = 0  # the head's exact size
        # (answer, the commit it waits for or None, close after it)
        self.pending: deque[tuple[bytes, Commit | None, bool]] = deque()
        self.waiting: Commit | None = None  # the latest commit _answer is registered with
        self.closing = False
        self.reading = True
        self.write_paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None
        self.connections.open.add(self)

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400)
            return
        except httptools.HttpParserError:
            self._fail(431 if self.head_size > MAX_HEAD_BYTES else 400)
            return
        # Bytes of a head still incomplete after parsing all belong to it (httptools would
        # buffer a header of any length): past the limit, 431 and close.
        if self.in_head and self.head_bytes > MAX_HEAD_BYTES:
            self._fail(431)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.connections.open.discard(self)

    def close_if_idle(self) -> None:
        """Close the connection unless an answer is still owed (it is waiting on a commit);
        abort it if it was closed before and is still there."""
        if self.transport is None:
            return
        if self.closing:
            self.transport.abort()
        elif not self.pending:
            self.closing = True
            self.transport.close()

    # A client that sends requests faster than it reads the answers (or than views commit)
    # is not read from until it catches up: nothing it sends piles up in memory.
    def pause_writing(self) -> None:
        self.write_paused = True
        self._reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        self._reading()

    def _reading(self) -> None:
        """Read from the client only while its answers are flowing."""
        wanted = not self.write_paused and len(self.pending) < _MAX_PENDING
        if self.transport is not None and wanted != self.reading and not self.closing:
            self.reading = wanted
            if wanted:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url, self.headers, self.in_head, self.head_size = b"", [], True, 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        self.head_size += len(name) + len(value)

    def on_headers_complete(self) -> None:
        self.in_head, self.head_bytes = False, 0
        if self.head_size > MAX_HEAD_BYTES:  # a whole head, but over the limit: 431
            raise httptools.HttpParserError("request head too large")

    def on_message_complete(self) -> None:
        self.in_head = True  # what comes next starts the next request's head
        self.active_tick = self.connections.tick
        if self.closing:
            return
        url = self.url
        path = url if url[:1] == b"/" and b"?" not in url else httptools.parse_url(url).path
        close = not self.parser.should_keep_alive()
        method = self.parser.get_method()
        commit: Commit | None = None
        if not path.startswith(b"/t/"):
            answer = _NOT_FOUND[close]
        elif method != b"GET" and method != b"HEAD":
            answer = _NOT_ALLOWED[close]
        else:
            answer = (_IMAGE if method == b"GET" else _IMAGE_HEAD)[close]
            try:
                view = self.app.view_of(method.decode(), path.decode("latin-1"), self.headers,
                                        self.peer)
                if view is not None:
                    commit = self.app.recorder.submit(view)
            except Exception:  # never let recording stop the image
                log.exception("pixel hit not recorded")
        self.pending.append((answer, commit, close))
        if len(self.pending) >= _MAX_PENDING:
            self._reading()
        if commit is None:
            self._answer()
        elif commit is not self.waiting:  # once per batch, however many requests wait on it
            self.waiting = commit
            commit.on_done(self._answer)

    # -- answering -------------------------------------------------------------------------

    def _answer(self) -> None:
        """Send every answer at the head of the line whose view is committed. A failed write
        is logged by the recorder for its whole batch; the image goes anyway."""
        pending = self.pending
        while pending:
            answer, commit, close = pending[0]
            if commit is not None and not commit.done:
                return
            pending.popleft()
            if self.transport is None or self.transport.is_closing():
                pending.clear()
                return
            if len(pending) == _MAX_PENDING - 1:
                self._reading()
            self.transport.write(answer)
            if close:
                self.transport.close()
                self.closing = True
                pending.clear()
                return

    def _fail(self, status: int) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(_FAILED[status])
            self.transport.close()
        self.closing = True


async def serve_pixels(app: PixelApp, host: str, port: int, stop: asyncio.Event,
                       idle_timeout: float = IDLE_TIMEOUT, clock: Clock = SYSTEM) -> None:
    """Serve until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    connections = Connections(idle_timeout, clock)
    server = await loop.create_server(lambda: PixelProtocol(app, connections), host, port,
                                      backlog=2048)
    sweeper = asyncio.create_task(connections.sweep(stop), name="mailseen-idle-connections")
    log.info("serving pixels on %s:%d", host, port)
    try:
        await stop.wait()
    finally:
        server.close()
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await server.wait_closed()


def run_pixel_node(instance: Instance, host: str, port: int,
                   idle_timeout: float = IDLE_TIMEOUT) -> None:
    """Run a pixel-only node until SIGTERM/SIGINT: the pixel endpoint and its recorder,
    nothing else. Pending views are written before it exits."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        recorder = instance.view_recorder()
        await recorder.start()
        app = PixelApp(instance.signer, recorder, instance.settings.trusted_proxies,
                       instance.clock)
        try:
            await serve_pixels(app, host, port, stop, idle_timeout, instance.clock)
        finally:
            await recorder.stop()
            log.info("stopped: pending views written")

    # Everything loaded so far lives as long as the process: keep it out of the collector's
    # sweeps, and sweep the young generation less often (a busy node allocates a batch's
    # worth of short-lived objects per commit, nearly all freed by reference counting).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    uvloop.run(main())
