"""`mailseen serve` as a user runs it: a real process on a fresh data folder."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from mailseen.core.pixel import GIF

from .cli_runner import Cli, ok


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
    assert b"stopped: pending views written, background work finished" in err
    assert b"Traceback" not in err
    # The default public URL is this machine's own: said once, at start, on one line.
    [warning] = [line for line in err.decode().splitlines()
                 if line.startswith("mailseen: warning")]
    assert warning.startswith(f"mailseen: warning: the pixel URL http://127.0.0.1:{port} is "
                              "not reachable by recipients: its host is a loopback address")
    assert "MAILSEEN_PUBLIC_URL" in warning


def test_serve_receives_mail_by_smtp_when_configured(tmp_path: Path, database_url: str,
                                                     cli: Cli) -> None:
    ok(cli("mailbox", "add", "support@example.com"))
    port, smtp_port = _free_port(), _free_port()
    env = {**os.environ, **cli.env, "MAILSEEN_SMTP_RECEIVER": f"127.0.0.1:{smtp_port}",
           "MAILSEEN_IMAP_POLL": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "mailseen", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                with smtplib.SMTP("127.0.0.1", smtp_port, timeout=5) as smtp:
                    smtp.sendmail("carol@example.org", ["support@example.com"],
                                  b"From: carol@example.org\r\nTo: support@example.com\r\n"
                                  b"Subject: Hello\r\nMessage-ID: <m1@example.org>\r\n\r\nHi\r\n")
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
        listing = ok(cli("message", "list"))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert listing.startswith("1\treceived\t") and "Hello" in listing, err.decode()


def test_serve_takes_submitted_mail_and_its_worker_relays_each_copy(
        tmp_path: Path, database_url: str, cli: Cli) -> None:
    import ssl

    from .smtp_server import SmtpServer
    from .submission_env import message, tls_files

    relay = SmtpServer("none", {}).start(tmp_path)
    cert, key, ca = tls_files(tmp_path)
    ok(cli("mailbox", "add", "sales@example.com", "--transport", "smtp", "--smtp-host",
           "127.0.0.1", "--smtp-port", str(relay.port), "--smtp-tls", "none",
           "--tracking", "enabled"))
    ok(cli("user", "add", "alice@example.com", "--mailboxes", "sales@example.com",
           "--password-stdin", input="correct horse battery\n"))
    password = ok(cli("user", "app-password", "add", "alice@example.com", "laptop")).strip()
    port, submission = _free_port(), _free_port()
    env = {**os.environ, **cli.env, "MAILSEEN_SUBMISSION_TLS": f"127.0.0.1:{submission}",
           "MAILSEEN_SUBMISSION_TLS_CERT": cert, "MAILSEEN_SUBMISSION_TLS_KEY": key,
           "MAILSEEN_IMAP_POLL": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "mailseen", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                with smtplib.SMTP_SSL("127.0.0.1", submission, timeout=5,
                                      context=ssl.create_default_context(cafile=ca)) as smtp:
                    smtp.login("alice@example.com", password)
                    smtp.sendmail("sales@example.com", ["bob@example.org", "eve@example.org"],
                                  message("Submitted", to="bob@example.org"))
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
        for _ in range(400):
            if len(relay.messages) == 2:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        relay.stop()
    assert sorted(m.rcpt_tos[0] for m in relay.messages) == [
        "bob@example.org", "eve@example.org"], err.decode()
    assert all(b"/t/" in m.data for m in relay.messages)
    listing = ok(cli("message", "list"))
    assert "\tsent\tnot viewed\tSubmitted" in listing, listing
