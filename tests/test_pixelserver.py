"""`mailseen pixel`: the lean pixel-only node, as a real process on the same database."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from mailseen.clock import ManualClock
from mailseen.core.pixel import GIF
from mailseen.core.tokens import TokenRef
from mailseen.records import MailboxIn
from mailseen.services.instance import Instance
from mailseen.services.recorder import ViewRecorder
from mailseen.web.pixel.endpoint import PixelApp
from mailseen.web.pixel.node import IDLE_TIMEOUT, serve_pixels

from .conftest import SECRET, backdate_sent

OUTLOOK = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17231; Pro)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_node(tmp_path: Path, database_url: str,
                *args: str) -> tuple[int, subprocess.Popen[bytes]]:
    """A `mailseen pixel` process, answering once this returns."""
    port = _free_port()
    env = {**os.environ, "MAILSEEN_DATA_DIR": str(tmp_path / "data"),
           "MAILSEEN_DATABASE_URL": database_url, "MAILSEEN_SECRET_KEY": SECRET}
    proc = subprocess.Popen([sys.executable, "-m", "mailseen", "pixel", "--port", str(port),
                             *args], env=env, stderr=subprocess.PIPE)
    for _ in range(400):
        try:
            httpx.get(f"http://127.0.0.1:{port}/t/x.gif")
            return port, proc
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the pixel node did not start: {proc.communicate()[1].decode()}")


def test_pixel_node_answers_records_and_stops_cleanly(tmp_path: Path, database_url: str,
                                                      instance: Instance) -> None:
    box = instance.store.add_mailbox(MailboxIn("a@example.com", tracking="enabled"))
    msg = instance.sender.submit(box, b"From: a@example.com\r\nTo: b@example.org\r\n"
                                      b"Content-Type: text/html\r\n\r\n<p>hi</p>")
    backdate_sent(instance, msg.id)
    token = instance.signer.make(TokenRef(msg.id))
    port, proc = _start_node(tmp_path, database_url)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base) as client:  # one keep-alive connection
            first = client.get(f"/t/{token}.gif", headers={"User-Agent": OUTLOOK})
            head = client.head(f"/t/{token}.gif")
            forged = client.get("/t/" + "A" * 31 + ".gif")
            other = client.get("/api/v1/health")
            post = client.post(f"/t/{token}.gif")
        assert first.status_code == 200 and first.content == GIF
        assert first.headers["cache-control"].startswith("no-store, no-cache")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == "43"
        assert forged.content == GIF and other.status_code == 404 and post.status_code == 405
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:  # pipelined
            # A genuine hit (answered once its view is committed), then two answered at
            # once: the answers still leave in request order.
            raw.sendall(b"GET /t/" + token.encode() + b".gif HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"HEAD /t/a.gif HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := raw.recv(4096):
                data += chunk
        assert data.count(b"200 OK") == 2 and data.index(GIF) < data.index(b"404 Not Found")
        assert data.endswith(b"\r\n\r\n") and b"connection: close" in data
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            # 300 pipelined requests sent before reading any answer: the server stops
            # reading while answers wait, then answers every one, in order.
            one = b"HEAD /t/" + b"B" * 31 + b".gif HTTP/1.1\r\nHost: x\r\n\r\n"
            raw.sendall(one * 299 + b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := raw.recv(65536):
                data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 299 and data.index(b"404") > data.rindex(b"200 OK")
        huge = httpx.get(f"{base}/t/{token}.gif", headers={"X-Big": "x" * 20000})
        assert huge.status_code == 431
        views = instance.store.list_views(msg.id)
        assert [(v.method, v.verdict) for v in views][:2] == [("GET", "human"),
                                                               ("HEAD", "machine")]
        assert [v.method for v in views] == ["GET", "HEAD", "GET"]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert b"pending views written" in err


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
HIT = b"GET /t/" + b"A" * 31 + b".gif HTTP/1.1\r\nHost: x\r\n\r\n"


async def _ask(conn: Stream) -> bytes:
    """Send one request on ``conn``; the head of the answer (its body read too)."""
    reader, writer = conn
    writer.write(HIT)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return head


async def _closed(conn: Stream) -> bool:
    """Whether the node has closed ``conn`` (waiting only for the close to arrive)."""
    try:
        return await asyncio.wait_for(conn[0].read(), 10) == b""
    except ConnectionResetError:
        return True


async def test_idle_and_dawdling_connections_are_closed_busy_ones_kept(
        instance: Instance, clock: ManualClock) -> None:
    """The node ticks every half timeout on its clock and closes a connection that has had
    no complete request for three ticks: idle between one and one and a half timeouts."""
    port = _free_port()
    stop = asyncio.Event()
    recorder = ViewRecorder(instance.store)
    await recorder.start()
    app = PixelApp(instance.signer, recorder, instance.settings.trusted_proxies)
    node = asyncio.create_task(serve_pixels(app, "127.0.0.1", port, stop, clock=clock))
    await clock.until_sleeping()  # listening; the sweeper waits for its first tick

    async def tick(count: int = 1) -> None:
        for _ in range(count):
            clock.advance(IDLE_TIMEOUT / 2)
            await clock.until_sleeping()  # swept, and waiting for the next tick

    opened: list[Stream] = []

    async def connect() -> Stream:
        opened.append(await asyncio.open_connection("127.0.0.1", port))
        return opened[-1]

    try:
        silent = await connect()  # never sends a byte
        used = await connect()  # one request, then idle
        assert (await _ask(used)).startswith(b"HTTP/1.1 200 OK")
        await tick(2)
        # Not before the timeout: a balancer reusing it just under it must find it open ...
        assert (await _ask(used)).startswith(b"HTTP/1.1 200 OK")
        await tick()
        assert await _closed(silent)
        await tick(2)
        assert await _closed(used)  # ... and then, idle again, it is closed

        slow = await connect()  # a head, a byte each tick: it never completes a request
        for byte in HIT[:3]:
            slow[1].write(bytes([byte]))
            await slow[1].drain()
            await tick()
        assert await _closed(slow)

        busy = await connect()  # a request every tick, for three timeouts
        for _ in range(6):
            assert (await _ask(busy)).startswith(b"HTTP/1.1 200 OK")
            await tick()
        assert (await _ask(busy)).startswith(b"HTTP/1.1 200 OK")

        # Sends, never reads: once its answers fill the buffers the node stops reading it;
        # closing cannot flush to a client that reads nothing, so the node aborts it.
        with socket.create_connection(("127.0.0.1", port)) as greedy:
            greedy.setblocking(False)
            head = b"HEAD /t/" + b"B" * 31 + b".gif HTTP/1.1\r\nHost: x\r\n\r\n"
            for _ in range(1000):
                try:
                    greedy.send(head * 1000)
                    await asyncio.sleep(0)  # the node reads while it can
                except BlockingIOError:  # full: time passes while it stays so
                    await tick()
                except OSError:  # ECONNRESET or EPIPE
                    break
            else:
                raise AssertionError("the greedy client was never cut off")
    finally:
        for _, writer in opened:
            writer.close()
        stop.set()
        await asyncio.wait_for(node, 10)
        await recorder.stop()
