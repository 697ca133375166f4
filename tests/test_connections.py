"""`mailseen serve` against slow and greedy clients: real sockets on a real server."""

from __future__ import annotations

import resource
import select
import socket
import time
from pathlib import Path

import httpx

from mailseen.services.instance import Instance
from mailseen.web.connections import raise_open_files_limit

from .conftest import LiveServer

HEAD = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n"


def _get(server: LiveServer, path: str, source: str) -> httpx.Response:
    """One ordinary request from the loopback address ``source``."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(server.url + path)


def _trickle(socks: list[socket.socket], within: float) -> dict[socket.socket, bytes]:
    """Send each socket one more header line about ten times a second, as a slowloris client
    does, until the server has closed all of them or ``within`` seconds have passed; what
    each closed socket received."""
    got = {s: b"" for s in socks}
    closed: dict[socket.socket, bytes] = {}
    deadline = time.monotonic() + within
    while len(closed) < len(socks) and time.monotonic() < deadline:
        live = [s for s in socks if s not in closed]
        readable, _, _ = select.select(live, [], [], 0.1)
        for s in readable:
            try:
                data = s.recv(65536)
            except OSError:  # reset once the server has closed it
                data = b""
            if data:
                got[s] += data
            else:
                closed[s] = got[s]
        for s in live:
            if s not in closed:
                try:
                    s.send(b"X-Slow: 1\r\n")
                except OSError:
                    closed[s] = got[s]
    return closed


def test_slow_heads_are_cut_and_one_address_cannot_take_every_connection(
        tmp_path: Path, database_url: str, instance: Instance) -> None:
    server = LiveServer(tmp_path, database_url, head_timeout=1.0,
                        connections_per_client=20).start()
    slow: list[socket.socket] = []
    opened = slow[:]  # every socket the test opens, closed at the end
    try:
        for _ in range(60):  # a slowloris client on one address: each sends half a head
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.setblocking(False)
            sock.send(HEAD)
            slow.append(sock)
            opened.append(sock)
        silent = socket.create_connection(("127.0.0.1", server.port),  # never sends a byte
                                          source_address=("127.0.0.2", 0))
        opened.append(silent)
        # The first twenty are held; the rest are turned away at once (with a 503 that the
        # client may not see: closing on unread bytes resets the connection).
        turned_away = _trickle(slow[20:], 10)
        assert len(turned_away) == 40
        assert {got[:12] for got in turned_away.values()} <= {b"", b"HTTP/1.1 503"}
        # Meanwhile anyone else is served, and that address is told to come back later.
        assert _get(server, "/api/v1/health", "127.0.0.3").status_code == 200
        assert _get(server, "/api/v1/health", "127.0.0.1").status_code == 503
        # The twenty held ones are closed once their head is overdue, however they trickle.
        cut = _trickle(slow[:20], 30)
        assert len(cut) == 20
        assert {got[:12] for got in cut.values()} <= {b"", b"HTTP/1.1 408"}
        silent.settimeout(30)
        assert silent.recv(65536) == b""
        # Then the address may connect again.
        assert _get(server, "/api/v1/health", "127.0.0.1").status_code == 200
    finally:
        for sock in opened:
            sock.close()
        server.stop()


def test_a_keep_alive_connection_is_served_again_before_its_head_is_overdue(
        tmp_path: Path, database_url: str, instance: Instance) -> None:
    server = LiveServer(tmp_path, database_url, head_timeout=5.0).start()
    try:
        with httpx.Client(timeout=10) as client:  # one connection, reused
            for _ in range(3):
                assert client.get(server.url + "/api/v1/health").status_code == 200
    finally:
        server.stop()


def test_serve_raises_the_open_files_limit_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if soft == hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(256, hard // 2), hard))
        assert raise_open_files_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
