"""`mailseen pixel`: the lean pixel-only node, as a real process on the same database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from mailseen.core.pixel import GIF
from mailseen.core.tokens import TokenRef
from mailseen.records import MailboxIn
from mailseen.services.instance import Instance

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


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` within ``within`` seconds (reading what it sends)."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    return True


def test_idle_and_dawdling_connections_are_closed_busy_ones_kept(
        tmp_path: Path, database_url: str, instance: Instance) -> None:
    port, proc = _start_node(tmp_path, database_url, "--idle-timeout", "1")
    hit = b"GET /t/" + b"A" * 31 + b".gif HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port)) as silent:  # never sends a byte
            assert _closed_by_server(silent, 5)
        with socket.create_connection(("127.0.0.1", port)) as used:  # one request, then idle
            used.sendall(hit)
            assert used.recv(65536).startswith(b"HTTP/1.1 200 OK")
            # Not before the timeout (a balancer reusing it just under 1 s must find it open;
            # a slow machine only delays the server's sweeps, never hastens them) ...
            assert not _closed_by_server(used, 0.6)
            used.sendall(hit)  # ... so this request is answered ...
            assert used.recv(65536).startswith(b"HTTP/1.1 200 OK")
            assert _closed_by_server(used, 5)  # ... and then, idle again, it is closed
        with socket.create_connection(("127.0.0.1", port)) as slow:  # a head, byte by byte
            slow.settimeout(0.1)
            started, closed = time.monotonic(), False
            for byte in hit[:-1]:
                try:
                    slow.sendall(bytes([byte]))
                    if slow.recv(65536) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
                except OSError:  # reset once the server has closed it
                    closed = True
                    break
            assert closed and time.monotonic() - started < 4
        with socket.create_connection(("127.0.0.1", port)) as greedy:  # sends, never reads
            # Once its answers fill the buffers the node stops reading it; closing cannot
            # flush to a client that reads nothing, so the node aborts it (a reset).
            greedy.setblocking(False)
            head = b"HEAD /t/" + b"B" * 31 + b".gif HTTP/1.1\r\nHost: x\r\n\r\n"
            deadline, reset = time.monotonic() + 15, False
            while not reset and time.monotonic() < deadline:
                try:
                    greedy.send(head * 1000)
                except BlockingIOError:
                    time.sleep(0.05)
                except OSError:  # ECONNRESET or EPIPE
                    reset = True
            assert reset
        with socket.create_connection(("127.0.0.1", port)) as busy:  # a request every 0.1 s
            busy.settimeout(5)
            for _ in range(30):  # 3 s: three timeouts
                busy.sendall(hit)
                assert busy.recv(65536).startswith(b"HTTP/1.1 200 OK")
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
