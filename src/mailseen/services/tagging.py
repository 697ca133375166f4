"""The `tag` filter: a message in, the same message out, tracked when it can be.

Contract (docs/tracking.md, "The tag filter"): whatever happens, the output is the tracked
message or the input unchanged, with exit status 0 and one line saying which. Only input
that is not a message at all, and a mailbox that does not exist, are refused (a non-zero exit
and nothing at all for the output); a message that cannot be written out whole fails with
:data:`CANNOT_WRITE`. A database that is locked, gone or full, a malformed message, or a
fault of our own never loses the mail: it goes out unchanged, unregistered.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from ..core.compose import parse_address
from ..errors import MailseenError, NotAMessage, NotFound
from .instance import Instance

__all__ = ["CANNOT_WRITE", "Filtered", "not_sent", "tag_filter", "write_whole"]

# EX_TEMPFAIL (sysexits.h): an MTA running the filter keeps the message and tries again.
CANNOT_WRITE = 75

# An mbox "From " line (the envelope sender an MTA's pipe may put first), not an obsolete
# "From :" header field.
_FROM_LINE = re.compile(rb"From (?![ \t]*:)[^\n]*\n")
_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Filtered:
    """What the filter makes of its input."""

    data: bytes  # the output, whole
    status: str  # the one line that says what happened: "trackable=true" or "…=false reason=…"
    message_id: int | None = None  # the message as registered, when it was


def _split_from_line(raw: bytes) -> tuple[bytes, bytes]:
    found = _FROM_LINE.match(raw)
    return (raw[:found.end()], raw[found.end():]) if found else (b"", raw)


def _unchanged(raw: bytes, exc: BaseException) -> Filtered:
    # Our errors are one line already; others' first line is the gist (SQLAlchemy adds a
    # second with a link).
    text = str(exc).strip()
    why = text if isinstance(exc, MailseenError) else (
        f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}")
    why = " ".join(_UNPRINTABLE.sub(" ", why).split())[:300] or type(exc).__name__
    return Filtered(raw, f"trackable=false reason=not registered: {why}")


def tag_filter(raw: bytes, mailbox_address: str, open_instance: Callable[[], Instance],
               recipient: str | None = None) -> Filtered:
    """Register ``raw`` as sent by the mailbox and return it tracked, or return it unchanged.

    Raises NotAMessage when ``raw`` is not a message (empty, or not starting with a header
    field, after an mbox "From " line if there is one) and NotFound for an unknown mailbox:
    the only refusals. Anything else that fails leaves the message unchanged and unregistered.
    Without ``recipient`` the pixel is one its recipients share (the status line says
    ``recipients=shared``); with it, the output is that recipient's copy.
    """
    envelope_line, message = _split_from_line(raw)
    if not message.strip() or not _FIELD.match(message):
        raise NotAMessage("input is not a message (it does not start with a header field)")
    if recipient is not None:
        recipient = parse_address(recipient, "recipient")  # a wrong argument is refused
    try:
        inst = open_instance()
    except Exception as exc:
        return _unchanged(raw, exc)
    try:
        box = inst.mailboxes.named(None, mailbox_address)
        record, data = inst.sender.tag(box, message, recipient)
    except NotFound:
        raise  # the mailbox named does not exist: nothing the filter could do is right
    except Exception as exc:
        return _unchanged(raw, exc)
    finally:
        inst.close()
    if record.tracked:
        status = "trackable=true " + (f"recipient={recipient}" if recipient
                                      else "recipients=shared")
    else:
        status = "trackable=false reason=" + record.tracking_reason.removeprefix(
            "not trackable: ")
    # The "From " line stays in front: the output is what came in, tracked.
    return Filtered(envelope_line + data, status, record.id)


def write_whole(stream: BinaryIO, data: bytes) -> None:
    """Write ``data`` in one go at the end of the work, so a filter killed before has written
    nothing. When a write fails (a full disk) on a regular file, the file is cut back to where
    it began: no partial message is left. Raises OSError."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file at all (a test runner's capture)
        stream.write(data)
        stream.flush()
        return
    stream.flush()
    start: int | None = None
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.fstat(fd).st_mode):
            start = os.lseek(fd, 0, os.SEEK_CUR)
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError:
        if start is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
        raise


def not_sent(open_instance: Callable[[], Instance], message_id: int, reason: str) -> None:
    """Mark a registered message failed when it could not be written out: the record must
    not claim a message went that never left. Best effort: the database may be gone too."""
    with contextlib.suppress(Exception):
        inst = open_instance()
        try:
            inst.store.fail_message(message_id, reason)
        finally:
            inst.close()
