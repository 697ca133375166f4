"""A real Dovecot IMAP server for tests: a throwaway config in a temp dir, IMAP (with STARTTLS)
and IMAPS on free ports, trustme certificates, users in a passwd-file. Mail goes in by IMAP
APPEND with the standard library's imaplib.

After a failed login Dovecot delays the next login from the same address by seconds (its
auth penalty, reset by a successful one): tests that fail logins on purpose use a server of
their own. The temp dir is not pytest's tmp_path: Dovecot's processes run as unprivileged users and
cannot enter pytest's 0700 directories.
"""

from __future__ import annotations

import imaplib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
import trustme

_CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={d}/home/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dovecot:
    def __init__(self, password: str, *, users: int = 50, extra_config: str = "") -> None:
        self.password = password
        self.users = [f"user{n}@example.test" for n in range(1, users + 1)]
        self.handed_out = 0
        self.extra_config = extra_config
        self.dir = Path(tempfile.mkdtemp(prefix="mailseen-dovecot-"))
        self.dir.chmod(0o755)
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.ca = trustme.CA()
        self.ca_file = str(self.dir / "ca.pem")
        self.pid: int | None = None

    def start(self) -> Dovecot:
        binary = shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/sbin")
        if binary is None:
            pytest.skip("Dovecot is not installed (apt-get install -y dovecot-imapd)")
        d = self.dir
        for sub in ("run", "state", "home"):
            (d / sub).mkdir()
        shutil.chown(d / "home", "nobody", "nogroup")
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
        cert.private_key_pem.write_to_path(str(d / "key.pem"))
        (d / "key.pem").chmod(0o600)
        self.ca.cert_pem.write_to_path(self.ca_file)
        (d / "passwd").write_text("".join(f"{user}:{{PLAIN}}{self.password}::::::\n"
                                          for user in self.users))
        (d / "dovecot.conf").write_text(_CONFIG.format(
            d=d, imap_port=self.imap_port, imaps_port=self.imaps_port) + self.extra_config)
        subprocess.run([binary, "-c", str(d / "dovecot.conf")], check=True, timeout=30)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        pid_file = self.dir / "run" / "master.pid"
        while True:
            try:  # the master writes its PID file a moment after the command returns
                self.pid = self.pid or int(pid_file.read_text())
                with socket.create_connection(("127.0.0.1", self.imap_port), timeout=1) as s:
                    if s.recv(100).startswith(b"* OK"):
                        return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Dovecot did not start; see {self.dir}/dovecot.log")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            self.pid = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text() if path.exists() else ""

    def kick(self, user: str) -> None:
        """Drop ``user``'s connections, as a server restarting or timing a client out does."""
        doveadm = shutil.which("doveadm") or "/usr/bin/doveadm"
        subprocess.run([doveadm, "-c", str(self.dir / "dovecot.conf"), "kick", user],
                       check=True, timeout=30, capture_output=True)

    def plain_logins(self, user: str) -> int:
        """Logins of ``user`` over connections without TLS (the tests' own client uses
        IMAPS, so these are the poller's when it is set to tls "none")."""
        return sum(1 for line in self.log().splitlines()
                   if f"Login: user=<{user}>" in line and ", TLS," not in line)

    def add_user(self) -> ImapUser:
        """A user nobody used yet, with an empty mailbox: tests sharing one server stay
        apart. (All users exist from the start: Dovecot would notice a changed passwd-file
        only a second later, and a failed login slows the next one by seconds.)"""
        self.handed_out += 1
        return ImapUser(self, self.users[self.handed_out - 1], self.password)


def connections_to(port: int) -> int:
    """Established TCP connections from this machine to ``port`` on 127.0.0.1 (Linux)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows
               if row.split()[2] == f"0100007F:{port:04X}" and row.split()[3] == "01")


class ImapUser:
    """One Dovecot user, with the test's own IMAP client (stdlib imaplib) to put mail in."""

    def __init__(self, server: Dovecot, name: str, password: str) -> None:
        self.server = server
        self.name = name
        self.password = password

    @contextmanager
    def client(self) -> Iterator[imaplib.IMAP4]:
        ctx = ssl.create_default_context(cafile=self.server.ca_file)
        imap = imaplib.IMAP4_SSL("127.0.0.1", self.server.imaps_port, ssl_context=ctx,
                                 timeout=10)
        try:
            imap.login(self.name, self.password)
            yield imap
        finally:
            imap.logout()

    def append(self, raw: bytes, folder: str = "INBOX", date: datetime | None = None) -> None:
        with self.client() as imap:
            when = imaplib.Time2Internaldate(date) if date else None
            typ, data = imap.append(folder, None, when, raw)
            assert typ == "OK", data

    def create(self, folder: str) -> None:
        with self.client() as imap:
            typ, data = imap.create(folder)
            assert typ == "OK", data

    def delete(self, folder: str) -> None:
        with self.client() as imap:
            typ, data = imap.delete(folder)
            assert typ == "OK", data

    def uidvalidity(self, folder: str) -> int:
        with self.client() as imap:
            typ, data = imap.status(folder, "(UIDVALIDITY)")
            assert typ == "OK", data
            return int(data[0].split(b"UIDVALIDITY ")[1].rstrip(b")"))

    def unseen(self, folder: str = "INBOX") -> int:
        with self.client() as imap:
            imap.select(folder, readonly=True)
            _, data = imap.search(None, "UNSEEN")
            return len(data[0].split())
