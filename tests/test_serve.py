"""`mailseen serve` as a user runs it: a real process on a fresh data folder."""

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_starts_on_a_fresh_data_folder_and_stops_on_sigterm(tmp_path: Path,
                                                                 database_url: str) -> None:
    port = _free_port()
    env = {**os.environ, "MAILSEEN_DATA_DIR": str(tmp_path / "fresh"),
           "MAILSEEN_DATABASE_URL": database_url}
    proc = subprocess.Popen([sys.executable, "-m", "mailseen", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(base + "/api/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        first = httpx.get(base + "/", follow_redirects=True)
        assert first.url.path == "/setup" and "Welcome to mailseen" in first.text
        assert httpx.get(base + "/t/anything.gif").content == GIF
        assert (tmp_path / "fresh" / "secret.key").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    # uvicorn re-raises SIGTERM once it has shut down, as servers conventionally do.
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()
    assert b"stopped: pending views written" in err
    assert b"Traceback" not in err
