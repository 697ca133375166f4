"""The `tag` filter as a real process: whatever goes wrong, the message comes out, tracked or
unchanged; only what is not a message, or an unknown mailbox, is refused, with nothing on
stdout; a killed or failed run leaves no partial message (docs/tracking.md, "The tag filter")."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from sqlalchemy import create_engine, text

from mailseen.records import MailboxIn
from mailseen.services.instance import Instance

from .conftest import BACKEND, SECRET
from .test_faults import _database_full, _database_gone, _database_locked

HTML = (b"From: support@example.com\r\nTo: bob@example.org\r\nSubject: Offer\r\n"
        b"Message-ID: <offer-1@example.com>\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"\r\n<html><body><p>Our offer</p></body></html>\r\n")
MBOX_LINE = b"From support@example.com Fri Dec  4 14:00:00 2026\n"


def _env(tmp_path: Path, database_url: str) -> dict[str, str]:
    return {**os.environ, "MAILSEEN_DATA_DIR": str(tmp_path / "data"),
            "MAILSEEN_DATABASE_URL": database_url, "MAILSEEN_SECRET_KEY": SECRET}


def _tag(tmp_path: Path, database_url: str, message: bytes, mailbox: str = "support@example.com",
         stdout: IO[bytes] | int = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "mailseen", "tag", "--mailbox", mailbox],
                          input=message, stdout=stdout, stderr=subprocess.PIPE,
                          env=_env(tmp_path, database_url), timeout=120, check=False)


@pytest.fixture
def box(instance: Instance) -> Iterator[Instance]:
    """A tracking mailbox; no connection of the test left open (the database may move)."""
    instance.store.add_mailbox(MailboxIn("support@example.com", tracking="enabled"))
    instance.db.dispose()
    yield instance


def _passed_unchanged(done: subprocess.CompletedProcess[bytes], message: bytes, why: str
                      ) -> None:
    assert done.returncode == 0, done.stderr
    assert done.stdout == message
    line = done.stderr.decode()
    assert line.startswith("trackable=false reason=not registered: ") and why in line, line
    assert line.count("\n") == 1 and line.endswith("\n")


# -- what used to be refused ------------------------------------------------------------------

def test_a_leading_mbox_from_line_stays_and_the_message_is_tracked(
        tmp_path: Path, database_url: str, box: Instance) -> None:
    done = _tag(tmp_path, database_url, MBOX_LINE + HTML)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"trackable=true recipients=shared\n"
    assert done.stdout.startswith(MBOX_LINE + b"From: support@example.com\r\n")
    assert b"/t/" in done.stdout
    [sent] = box.store.list_messages()
    [copy] = box.store.copies_of([sent.id])[sent.id]
    assert sent.tracked and copy.recipient is None  # one pixel every recipient shares
    assert box.sender.copy_bytes(box.store.get_raw(sent.id), copy) == (
        done.stdout[len(MBOX_LINE):])


@pytest.mark.parametrize(("message", "why"), [
    (HTML.replace(b"Subject: Offer", b"Subject: Of\0fer"), "NUL byte in the header"),
    (HTML.replace(b"Subject: Offer\r\n", b"Subject: Offer\r\nnot a header line\r\n"),
     "bad header line"),
])
def test_a_malformed_message_passes_unchanged(tmp_path: Path, database_url: str,
                                              box: Instance, message: bytes, why: str) -> None:
    _passed_unchanged(_tag(tmp_path, database_url, message), message, why)
    assert box.store.list_messages() == []


# -- the database failing ---------------------------------------------------------------------

def test_with_the_database_locked_the_message_passes_unchanged(
        tmp_path: Path, database_url: str, box: Instance) -> None:
    with _database_locked(database_url):
        done = _tag(tmp_path, database_url, HTML)
    _passed_unchanged(done, HTML, "database unavailable")
    assert box.store.list_messages() == []


def test_with_the_database_gone_the_message_passes_unchanged(
        tmp_path: Path, database_url: str, box: Instance) -> None:
    with _database_gone(database_url) as (url, _):
        done = _tag(tmp_path, url, MBOX_LINE + HTML)
    _passed_unchanged(done, MBOX_LINE + HTML, "")
    assert box.store.list_messages() == []


def test_with_the_database_full_the_message_passes_unchanged(
        tmp_path: Path, database_url: str, box: Instance) -> None:
    with _database_full(database_url, tmp_path) as (url, switch):
        switch(True)
        done = _tag(tmp_path, url, HTML)
        switch(False)
    _passed_unchanged(done, HTML, "")
    box.db.dispose()
    assert box.store.list_messages() == []


# -- the two refusals ---------------------------------------------------------------------------

@pytest.mark.parametrize(("message", "mailbox", "code", "words"), [
    (b"", "support@example.com", 2, "not a message"),
    (b"just some words\n", "support@example.com", 2, "not a message"),
    (MBOX_LINE, "support@example.com", 2, "not a message"),
    (b"\x00\x01\x02\xff\xfe binary", "support@example.com", 2, "not a message"),
    (HTML, "nobody@example.com", 1, "no mailbox nobody@example.com"),
])
def test_only_what_is_not_a_message_or_an_unknown_mailbox_is_refused_with_nothing_out(
        tmp_path: Path, database_url: str, box: Instance, message: bytes, mailbox: str,
        code: int, words: str) -> None:
    done = _tag(tmp_path, database_url, message, mailbox)
    assert done.returncode == code
    assert done.stdout == b""
    line = done.stderr.decode()
    assert line.startswith("mailseen: error: ") and words in line and line.count("\n") == 1


# -- output that cannot be written, a filter killed -----------------------------------------------

@contextlib.contextmanager
def _full_disk(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs filled to the last byte: a folder where every write gets ENOSPC."""
    mount = tmp_path / "full-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode:
        pytest.skip("mounting a small tmpfs needs root: " + done.stderr.decode().strip())
    try:
        with (mount / "filler").open("wb", buffering=0) as out, contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 4096)
                out.flush()
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_output_to_a_full_disk_fails_for_a_retry_leaving_nothing_and_no_sent_record(
        tmp_path: Path, database_url: str, box: Instance) -> None:
    with _full_disk(tmp_path) as disk, (disk / "out.eml").open("wb") as out:
        done = _tag(tmp_path, database_url, HTML, stdout=out)
        assert (disk / "out.eml").stat().st_size == 0
    assert done.returncode == 75  # EX_TEMPFAIL: an MTA keeps the message and tries again
    assert done.stderr.decode() == ("mailseen: error: cannot write the message out: "
                                    "No space left on device\n")
    [msg] = box.store.list_messages()
    assert msg.status == "failed"
    assert msg.last_error == ("the tag filter cannot write the message out: "
                              "No space left on device")


def _waiting_on_the_lock(proc: subprocess.Popen[bytes], database_url: str) -> bool:
    """Whether the filter has got as far as waiting for the locked database."""
    if BACKEND == "sqlite":
        path = os.path.realpath(database_url.removeprefix("sqlite:///"))
        with contextlib.suppress(OSError):
            fds = Path(f"/proc/{proc.pid}/fd")
            return any(os.path.realpath(fd) == path for fd in fds.iterdir())
        return False
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")).scalar_one())
    finally:
        engine.dispose()


def test_a_filter_killed_mid_run_has_written_nothing(tmp_path: Path, database_url: str,
                                                      box: Instance) -> None:
    out_path, in_path = tmp_path / "out.eml", tmp_path / "in.eml"
    in_path.write_bytes(HTML)
    with _database_locked(database_url), in_path.open("rb") as given, \
            out_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mailseen", "tag", "--mailbox",
                                 "support@example.com"], stdin=given, stdout=out,
                                stderr=subprocess.PIPE, env=_env(tmp_path, database_url))
        try:
            deadline = time.monotonic() + 60
            while not _waiting_on_the_lock(proc, database_url):
                assert proc.poll() is None and time.monotonic() < deadline, "never got there"
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGKILL
    assert out_path.read_bytes() == b""
