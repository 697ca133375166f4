#!/usr/bin/env python3
"""Slowloris against `mailseen serve`: can others still get in while slow clients attack?

Starts `mailseen serve` (from --python's environment, on a fresh data folder, its open-files
limit set to --nofile by prlimit, soft and hard) and attacks it from --attackers loopback
addresses (127.0.0.10, .11, …), each keeping --per-attacker connections open that send half a
request head and then one header line every second, reopening every connection the server
closes. Meanwhile a probe from 127.0.0.2 asks for /api/v1/health twice a second. Reported:
the share of probes answered 200, their slowest time, and the most attack connections the
server held at once.

Usage: bench/slowloris.py [--attackers 15] [--per-attacker 200] [--duration 40]
                          [--nofile 2048] [--python .venv/bin/python]
"""

from __future__ import annotations

import argparse
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HEAD = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _probe(port: int) -> tuple[bool, float]:
    started = time.monotonic()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                        source_address=("127.0.0.2", 0))
        with sock:
            sock.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            ok = sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    return ok, time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attackers", type=int, default=15)
    parser.add_argument("--per-attacker", type=int, default=200)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--nofile", type=int, default=2048)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    port = _free_port()
    data = tempfile.mkdtemp(prefix="mailseen-slowloris-")
    env = {**os.environ, "MAILSEEN_DATA_DIR": data, "MAILSEEN_IMAP_POLL": "false",
           "MAILSEEN_LOG_LEVEL": "error"}
    server = subprocess.Popen(
        ["prlimit", f"--nofile={args.nofile}:{args.nofile}", args.python, "-m", "mailseen",
         "serve", "--port", str(port), "--no-worker"],
        env=env, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        sel = selectors.DefaultSelector()
        held: dict[socket.socket, str] = {}

        def open_one(source: str) -> None:
            sock = socket.socket()
            sock.setblocking(False)
            sock.bind((source, 0))
            try:
                sock.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            except OSError:
                sock.close()
                return
            held[sock] = source
            sel.register(sock, selectors.EVENT_READ)

        sources = [f"127.0.0.{10 + n}" for n in range(args.attackers)]
        for source in sources:
            for _ in range(args.per_attacker):
                open_one(source)
        probes: list[tuple[bool, float]] = []
        most = 0
        sent_head: set[socket.socket] = set()
        end = time.monotonic() + args.duration
        next_trickle = next_probe = time.monotonic()
        while time.monotonic() < end:
            for key, _ in sel.select(0.05):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    closed = sock.recv(4096) == b""
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    source = held.pop(sock)
                    sel.unregister(sock)
                    sock.close()
                    sent_head.discard(sock)
                    open_one(source)  # the attacker comes straight back
            now = time.monotonic()
            if now >= next_trickle:
                next_trickle = now + 1.0
                for sock in list(held):
                    try:
                        sock.send(b"X-Slow: 1\r\n" if sock in sent_head else HEAD)
                        sent_head.add(sock)
                    except (BlockingIOError, OSError):
                        pass
                most = max(most, len(held))
            if now >= next_probe:
                next_probe = now + 0.5
                probes.append(_probe(port))
        answered = sum(ok for ok, _ in probes)
        slowest = max((t for ok, t in probes if ok), default=float("nan"))
        print(f"attack: {args.attackers} addresses x {args.per_attacker} slow connections, "
              f"server open-files limit {args.nofile}, {args.duration:.0f} s")
        print(f"probes answered 200: {answered}/{len(probes)} "
              f"({100 * answered / max(1, len(probes)):.0f}%), slowest {slowest * 1000:.0f} ms; "
              f"attack sockets open (client side) at most {most}")
        for sock in held:
            sock.close()
        return 0
    finally:
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    sys.exit(main())
