"""A byte-offset view of a MIME message: which bytes are whose headers and bodies.

The standard library's ``email`` package re-folds headers and re-encodes parts when it
serialises a message, which would break "everything else stays exactly as written". So this
module parses headers with ``email`` but keeps every part as offsets into the original bytes,
letting the injector replace one body and leave every other byte alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from functools import cached_property

__all__ = ["BrokenMime", "Part", "eol_of", "parse_tree", "split_head"]

_MAX_DEPTH = 40
# Each part costs a header parse: 50,000 parts took seconds. Past this many the structure is
# not followed (the message is left as it is; core/mailbody reads it with the same bound).
_MAX_PARTS = 500
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")
# A preamble that starts like a part's header block is a part whose opening delimiter is
# missing (a preamble is free text, "This is a multi-part message in MIME format.").
_PART_HEAD = re.compile(rb"(?:[ \t]*\r?\n)*Content-[A-Za-z-]+[ \t]*:", re.I)


class BrokenMime(ValueError):
    """The MIME structure cannot be followed safely (no boundary, bad nesting …)."""


@dataclass
class Part:
    start: int  # offset of the part's first header byte in the whole message
    body_start: int
    end: int  # offset just past the body (the eol before the next delimiter is not body)
    # The part's MIME headers: Content-*, MIME-Version and DKIM-Signature (what anything
    # here reads); the others (Received, Subject …) are not parsed.
    headers: Message
    children: list[Part] = field(default_factory=list)
    # False when no blank line ends the headers: the body is empty and anything put at
    # body_start would join the last header line.
    separated: bool = True

    # Each read once: a tagging asks them of every part several times over.
    @cached_property
    def content_type(self) -> str:
        return self.headers.get_content_type()

    @cached_property
    def is_multipart(self) -> bool:
        return self.content_type.partition("/")[0] == "multipart"

    @cached_property
    def is_attachment(self) -> bool:
        return self.headers.get_content_disposition() == "attachment"

    @cached_property
    def transfer_encoding(self) -> str:
        return str(self.headers.get("Content-Transfer-Encoding", "7bit")).strip().lower()

    def walk(self) -> list[Part]:
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


def eol_of(raw: bytes) -> bytes:
    """The line ending a message uses, judged by its first line."""
    nl = raw.find(b"\n")
    return b"\r\n" if nl > 0 and raw[nl - 1 : nl] == b"\r" else b"\n"


def split_head(raw: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """Return (end of header block, start of body) for the entity in ``raw[start:end]``."""
    end = len(raw) if end is None else end
    # An entity that starts with a blank line has no headers. (Bounded by ``end``: an empty
    # part is followed by its delimiter's line ending, which is not the part's.)
    if raw.startswith(b"\r\n", start, end) or raw.startswith(b"\n", start, end):
        nl = raw.index(b"\n", start, end)
        return start, nl + 1
    m = _HEAD_END.search(raw, start, end)
    if m is None:
        return end, end
    return m.start(), m.end()


def _headers(raw: bytes, start: int, head_end: int, default_type: str) -> Message:
    block = raw[start:head_end]
    fields = _mime_fields(block)
    if fields is None:
        msg = BytesHeaderParser(policy=compat32).parsebytes(block + b"\n\n")
    else:
        msg = Message(policy=compat32)
        for name, value in fields:
            msg.set_raw(name, value)
    if default_type != "text/plain":
        msg.set_default_type(default_type)
    return msg


# A header line as the email package's parser takes one (email.feedparser.headerRE, less
# its "From " and continuation cases): a name of printable characters but ":", then ":".
_FIELD = re.compile(rb"[!-9;-~]*:")
_MIME_FIELDS = (b"content-", b"mime-version:", b"dkim-signature:")


def _mime_fields(block: bytes) -> list[tuple[str, str]] | None:
    """The MIME headers of a header block, (name, value) as the email package's parser
    reads them (compat32's header_source_parse of each field's lines), in order; it costs a
    fraction of that parser's time (a part's headers are read for every copy delivered).
    None when the block is anything but plain header lines (a "From " line, a line that is
    not a header, a bare CR): then the package is left to read it its way."""
    if block.count(b"\r") != block.count(b"\r\n"):
        return None
    fields: list[tuple[str, str]] = []
    field: list[str] | None = None
    for line in block.split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if field is not None:
                field.append(line.decode("ascii", "surrogateescape") + "\n")
            continue
        m = _FIELD.match(line)
        if m is None:
            return None
        if field is not None:
            fields.append(_field(field))
        field = ([line.decode("ascii", "surrogateescape") + "\n"]
                 if line[:m.end()].lower().startswith(_MIME_FIELDS) else None)
    if field is not None:
        fields.append(_field(field))
    return fields


def _field(lines: list[str]) -> tuple[str, str]:
    name, value = lines[0].split(":", 1)  # as compat32.header_source_parse does
    return name, (value.lstrip(" \t") + "".join(lines[1:])).rstrip("\r\n")


def parse_tree(raw: bytes) -> Part:
    """Parse ``raw`` into a tree of parts with absolute offsets. Raises :class:`BrokenMime`."""
    return _parse(raw, 0, len(raw), "text/plain", 0, [0])


def _parse(raw: bytes, start: int, end: int, default_type: str, depth: int,
           count: list[int]) -> Part:
    if depth > _MAX_DEPTH:
        raise BrokenMime("MIME parts nested too deeply")
    count[0] += 1  # parts so far, in the whole message
    if count[0] > _MAX_PARTS:
        raise BrokenMime(f"more than {_MAX_PARTS} MIME parts")
    head_end, body_start = split_head(raw, start, end)
    headers = _headers(raw, start, head_end, default_type)
    part = Part(start, body_start, end, headers, separated=body_start > head_end)
    if not part.is_multipart:
        return part
    boundary = headers.get_boundary()
    if not boundary:
        raise BrokenMime(f"{part.content_type} without a boundary")
    if len(boundary) > 200:
        raise BrokenMime("MIME boundary longer than 200 characters")
    child_type = "message/rfc822" if part.content_type == "multipart/digest" else "text/plain"
    if not boundary.isascii():
        # RFC 2046 boundaries are ASCII; readers (the email package among them) find none.
        raise BrokenMime(f"{part.content_type} with a non-ASCII boundary")
    # The literal found with a fast scan, then the rest of the line matched: no pattern
    # compiled per boundary (every message has its own, and re's cache would churn).
    delim = b"--" + boundary.encode("ascii")
    # (start, end, closing) of each delimiter line; the eol before a delimiter belongs to it;
    # the first delimiter may start the body.
    marks: list[tuple[int, int, bool]] = []
    pos = body_start
    while True:
        mark = _delimiter(raw, delim, pos, end)
        if mark is None:
            break
        marks.append(mark)
        if mark[2]:
            break
        if count[0] + len(marks) > _MAX_PARTS:
            raise BrokenMime(f"more than {_MAX_PARTS} MIME parts")
        pos = mark[1]
    if not marks:
        raise BrokenMime(f"{part.content_type} whose boundary never appears")
    # Readers disagree on these (the email package runs the last part to the end; others
    # drop it, or show the headless first part as text), so what one shows is not what
    # another does and there is no safe place for a pixel.
    if not marks[-1][2]:
        raise BrokenMime(f"{part.content_type} without its closing boundary")
    if _PART_HEAD.match(raw, body_start, marks[0][0]):
        raise BrokenMime(f"{part.content_type} whose first part has no opening boundary")
    for i, (_, child_start, closing) in enumerate(marks):
        if closing:
            break
        child_end = marks[i + 1][0]
        part.children.append(_parse(raw, child_start, child_end, child_type, depth + 1,
                                    count))
    if not part.children:
        raise BrokenMime(f"{part.content_type} with no parts")
    return part


# What may follow "--" and the boundary on a delimiter line: "--" when it closes, blanks.
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r?\n|\Z)")


def _delimiter(raw: bytes, delim: bytes, pos: int, end: int
               ) -> tuple[int, int, bool] | None:
    """The next delimiter line in ``raw[pos:end]`` that starts a line: (start, end, whether
    it closes), its start taking in the eol before it when that lies within the range."""
    while True:
        at = raw.find(delim, pos, end)
        if at < 0:
            return None
        m = _DELIMITER_TAIL.match(raw, at + len(delim), end)
        if m is None:
            pos = at + 1
            continue
        if at == 0 or raw[at - 1] == 0x0A:  # "\n"
            start = at
            if at - 1 >= pos:
                start = at - 2 if at - 2 >= pos and raw[at - 2] == 0x0D else at - 1
            return start, m.end(), m.group(1) is not None
        pos = at + 1
