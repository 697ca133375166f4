"""Put the tracking pixel into a message, changing nothing else.

Contract (see docs/tracking.md):
- Only the HTML a reader shows as the body gets the pixel: each HTML alternative of
  multipart/alternative, the root of multipart/related, and in any other multipart the last
  child that shows HTML. Never attachments, attached messages, AMP or calendar parts.
- Signed or encrypted messages, and messages carrying a DKIM-Signature, are returned unchanged
  (reason "signed"); so are messages without an HTML body ("plain text") and messages whose
  structure cannot be followed safely ("broken MIME: …"). Nothing is ever half-rewritten.
- Every byte outside the rewritten HTML bodies stays as it was, headers included; a rewritten
  body keeps its charset and transfer encoding.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import quopri
from collections.abc import Callable
from dataclasses import dataclass
from email import quoprimime

from .htmlscan import splice_pixel
from .mimetree import BrokenMime, Part, eol_of, parse_tree

__all__ = ["TagResult", "tag_message"]

_SIGNED_TYPES = frozenset({
    "multipart/signed", "multipart/encrypted", "application/pkcs7-mime",
    "application/x-pkcs7-mime",
})
_MAX_LINE = 998  # RFC 5322 2.1.1, excluding the CRLF


@dataclass(frozen=True)
class TagResult:
    data: bytes
    trackable: bool
    reason: str | None = None  # why not trackable: "plain text", "signed", "broken MIME: …"
    parts_tagged: int = 0
    pixels_removed: int = 0


def tag_message(raw: bytes, tag: str, is_own_pixel: Callable[[str], bool]) -> TagResult:
    """Return ``raw`` with ``tag`` spliced into each displayed HTML body."""
    try:
        root = parse_tree(raw)
    except BrokenMime as exc:
        return TagResult(raw, False, f"broken MIME: {exc}")
    if root.headers.get("DKIM-Signature") is not None:
        return TagResult(raw, False, "signed")
    if any(p.content_type in _SIGNED_TYPES for p in _visible(root)):
        return TagResult(raw, False, "signed")
    targets = _targets(root)
    if not targets:
        return TagResult(raw, False, "plain text")
    eol = eol_of(raw)
    out = raw
    removed = 0
    # Replace from the end so earlier offsets stay valid.
    for part in sorted(targets, key=lambda p: p.body_start, reverse=True):
        try:
            body, n = _rewrite_body(raw, part, tag, is_own_pixel, eol)
        except BrokenMime as exc:
            return TagResult(raw, False, f"broken MIME: {exc}")
        out = out[: part.body_start] + body + out[part.end :]
        removed += n
    return TagResult(out, True, None, len(targets), removed)


def _visible(part: Part) -> list[Part]:
    """Every part except what sits inside an attached message."""
    out = [part]
    if part.content_type != "message/rfc822":
        for child in part.children:
            out.extend(_visible(child))
    return out


def _targets(part: Part) -> list[Part]:
    if part.is_attachment:
        return []
    ctype = part.content_type
    if ctype == "text/html":
        return [part]
    if not part.is_multipart:
        return []
    subtype = ctype.split("/", 1)[1]
    if subtype == "alternative":
        return [t for child in part.children for t in _targets(child)]
    if subtype == "related":
        start = part.headers.get_param("start")
        root = part.children[0]
        if isinstance(start, str):
            for child in part.children:
                if str(child.headers.get("Content-ID", "")).strip() == start.strip():
                    root = child
                    break
        return _targets(root)
    for child in reversed(part.children):
        found = _targets(child)
        if found:
            return found
    return []


def _decode_transfer(data: bytes, cte: str) -> bytes:
    if cte in ("7bit", "8bit", "binary", ""):
        return data
    if cte == "quoted-printable":
        return quopri.decodestring(data)
    if cte == "base64":
        try:
            return base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BrokenMime("HTML part with invalid base64") from exc
    raise BrokenMime(f"unknown transfer encoding {cte!r}")


def _encode_transfer(data: bytes, cte: str, eol: bytes, trailing_eol: bool) -> bytes:
    if cte == "quoted-printable":
        text = quoprimime.body_encode(data.decode("latin-1"), 76, eol.decode("ascii"))
        out = text.encode("ascii")
    elif cte == "base64":
        out = base64.encodebytes(data).replace(b"\n", eol)
    else:
        return data
    out = out.rstrip(b"\r\n")
    return out + eol if trailing_eol else out


def _ascii_compatible(charset: str) -> bool:
    """True when ASCII text is encoded as the same bytes and never inside a multibyte
    sequence, so the pixel can be spliced into the bytes without decoding them."""
    name = codecs.lookup(charset).name
    return not name.startswith(("utf-16", "utf-32", "utf-7", "iso2022", "hz", "cp037",
                                "cp273", "cp424", "cp500", "cp875", "cp1026", "cp1140"))


def _rewrite_body(raw: bytes, part: Part, tag: str, is_own_pixel: Callable[[str], bool],
                  eol: bytes) -> tuple[bytes, int]:
    original = raw[part.body_start : part.end]
    cte = part.transfer_encoding
    content = _decode_transfer(original, cte)
    charset = part.headers.get_content_charset() or "us-ascii"
    try:
        compatible = _ascii_compatible(charset)
    except LookupError as exc:
        raise BrokenMime(f"unknown charset {charset!r}") from exc
    max_line = _MAX_LINE if cte in ("7bit", "8bit", "binary", "") else None
    if compatible:
        # latin-1 maps every byte to one code point, so offsets and bytes survive unchanged.
        html = content.decode("latin-1")
        spliced, removed = splice_pixel(html, tag, is_own_pixel, max_line)
        new_content = spliced.encode("latin-1")
    else:
        try:
            html = content.decode(charset)
        except UnicodeDecodeError as exc:
            raise BrokenMime(f"HTML part not valid {charset}") from exc
        spliced, removed = splice_pixel(html, tag, is_own_pixel, max_line)
        new_content = spliced.encode(charset)
    trailing = original.endswith(b"\n")
    return _encode_transfer(new_content, cte, eol, trailing), removed

