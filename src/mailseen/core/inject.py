"""Put the tracking pixel into a message, changing nothing else.

Contract (see docs/tracking.md):
- Only the HTML a reader shows as the body gets the pixel: each HTML alternative of
  multipart/alternative, the root of multipart/related, and in any other multipart the last
  child that shows HTML. Never attachments, attached messages, AMP or calendar parts.
- Signed or encrypted messages, and messages carrying a DKIM-Signature, are returned unchanged
  (reason "signed"); so are messages without an HTML body ("plain text") and messages whose
  structure cannot be followed safely ("broken MIME: …"). Nothing is ever half-rewritten.
- Every byte outside the rewritten HTML bodies stays as it was, headers included; a rewritten
  body keeps its charset and transfer encoding. Two exceptions keep the output within RFC
  5322: a rewritten body with lines over 998 octets is sent quoted-printable (its
  Content-Transfer-Encoding field says so), and a message with mixed line endings or bare
  CRs has all of them made the line ending of its first line.
- Our own earlier pixels (a quoted reply to one of our messages) are taken out of every HTML
  body a reader shows, so showing this message does not count as a view of the earlier one.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass

from .htmlscan import splice_pixel
from .mimetree import BrokenMime, Part, eol_of, parse_tree, split_head
from .splice import common_prefix, common_suffix

__all__ = ["LinkEdits", "TagResult", "tag_message"]

# Click tracking's edits to one HTML body (core/links.py ``link_edits``): given the HTML as
# text and, where that text is the body's bytes read as latin-1, how to read its characters
# in the part's own charset, the (start, end, new value) of each link to point elsewhere.
LinkEdits = Callable[[str, Callable[[str], str] | None], list[tuple[int, int, str]]]

_SIGNED_TYPES = frozenset({
    "multipart/signed", "multipart/encrypted", "application/pkcs7-mime",
    "application/x-pkcs7-mime",
})
_MAX_LINE = 998  # RFC 5322 2.1.1, excluding the CRLF
_QP_LINE = 76  # RFC 2045 6.7 (5)
_IDENTITY = ("7bit", "8bit", "binary", "")
_ANY_EOL = re.compile(rb"\r\n|\r|\n")
_CTE_FIELD = b"Content-Transfer-Encoding"

# Charsets in which an ASCII byte can be part of another character (or ASCII is not what it
# is), so the HTML must be decoded before it is searched: UTF-16/32, UTF-7 and the ISO-2022
# and HZ escape encodings, Johab (trail bytes from 0x31, "<" among them), and EBCDIC.
_DECODE_FIRST = ("utf-16", "utf-32", "utf-7", "iso2022", "hz", "johab", "cp037", "cp273",
                 "cp424", "cp500", "cp875", "cp1026", "cp1140")
# Python codecs that no mail client knows as a charset.
_NOT_CHARSETS = frozenset({"idna", "punycode", "unicode-escape", "raw-unicode-escape",
                           "undefined", "mbcs", "oem", "charmap", "palmos"})


@dataclass(frozen=True)
class TagResult:
    data: bytes
    trackable: bool
    reason: str | None = None  # why not trackable: "plain text", "signed", "broken MIME: …"
    parts_tagged: int = 0
    pixels_removed: int = 0


def tag_message(raw: bytes, tag: str, is_own_pixel: Callable[[str], bool],
                links: LinkEdits | None = None) -> TagResult:
    """Return ``raw`` with ``tag`` spliced into each displayed HTML body, and with ``links``
    (click tracking) the links of those bodies pointed where it says."""
    try:
        return _tag(raw, tag, is_own_pixel, links)
    except BrokenMime as exc:
        return TagResult(raw, False, f"broken MIME: {exc}")


def _tag(raw: bytes, tag: str, is_own_pixel: Callable[[str], bool],
         links: LinkEdits | None) -> TagResult:
    root = parse_tree(raw)
    if root.headers.get("DKIM-Signature") is not None:
        return TagResult(raw, False, "signed")
    if any(p.content_type in _SIGNED_TYPES for p in _visible(root)):
        return TagResult(raw, False, "signed")
    targets = _targets(root)
    if not targets:
        return TagResult(raw, False, "plain text")
    eol = eol_of(raw)
    work = _one_eol(raw, eol)
    if work is not raw:
        root = parse_tree(work)
        targets = _targets(root)
    target_ids = {id(p) for p in targets}
    edits: list[tuple[int, int, bytes]] = []
    removed = 0
    # Every body is rewritten before any is applied, so a failure leaves the message whole.
    for part in _displayed_html(root):
        is_target = id(part) in target_ids
        edit, n = _rewrite_part(work, part, tag if is_target else "", is_own_pixel, eol,
                                links if is_target else None)
        removed += n
        if edit is not None:
            edits.append(edit)
    if not edits:
        return TagResult(raw, True, None, len(targets), 0)
    out = work
    # Replace from the end so earlier offsets stay valid.
    for start, end, data in sorted(edits, reverse=True):
        out = out[:start] + data + out[end:]
    return TagResult(out, True, None, len(targets), removed)


def _one_eol(raw: bytes, eol: bytes) -> bytes:
    """``raw`` with every line ending (CRLF, LF, bare CR) made ``eol``; ``raw`` itself when
    it already has one convention. A part in binary transfer encoding, whose CRs and LFs are
    data, cannot be changed so: BrokenMime."""
    crs = raw.count(b"\r")
    if (crs == 0 if eol == b"\n" else crs == raw.count(b"\n") == raw.count(b"\r\n")):
        return raw
    if any(p.transfer_encoding == "binary" for p in parse_tree(raw).walk()):
        raise BrokenMime("binary part in a message with mixed line endings")
    return _ANY_EOL.sub(eol, raw)


def _visible(part: Part) -> list[Part]:
    """Every part except what sits inside an attached message."""
    out = [part]
    if part.content_type != "message/rfc822":
        for child in part.children:
            out.extend(_visible(child))
    return out


def _related_root(part: Part) -> Part:
    start = part.headers.get_param("start")
    if isinstance(start, str) and start.strip(" <>"):
        # RFC 2387 wants the Content-ID with its angle brackets; some writers drop them.
        wanted = start.strip(" <>")
        for child in part.children:
            if str(child.headers.get("Content-ID", "")).strip(" <>\t\r\n") == wanted:
                return child
    return part.children[0]


def _targets(part: Part) -> list[Part]:
    """The HTML a reader shows as the body, which gets the pixel."""
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
        return _targets(_related_root(part))
    for child in reversed(part.children):
        found = _targets(child)
        if found:
            return found
    return []


def _displayed_html(part: Part) -> list[Part]:
    """Every HTML body a reader may show inline (a superset of the targets: readers show
    each inline leaf of a mixed part, not only the last), in which old pixels would load."""
    if part.is_attachment:
        return []
    if part.content_type == "text/html":
        return [part]
    if not part.is_multipart:
        return []
    if part.content_type == "multipart/related":
        return _displayed_html(_related_root(part))
    return [p for child in part.children for p in _displayed_html(child)]


def _decode_transfer(data: bytes, cte: str) -> bytes:
    if cte in _IDENTITY:
        return data
    if cte == "quoted-printable":
        return binascii.a2b_qp(data)
    if cte == "base64":
        try:
            return base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BrokenMime("HTML part with invalid base64") from exc
    raise BrokenMime(f"unknown transfer encoding {cte!r}")


_QP_UNSAFE = re.compile(rb"[^!-<>-~ \t]")  # all but printable ASCII without "=", space, tab
_QP_ESCAPE = [b"=%02X" % b for b in range(256)]


def _qp_escape(m: re.Match[bytes]) -> bytes:
    return _QP_ESCAPE[m.group()[0]]


def _qp_encode(data: bytes, eol: bytes) -> bytes:
    """Quoted-printable that decodes to exactly ``data``: only ``eol`` is a hard line break;
    any other CR or LF, and white space ending a line, is escaped (RFC 2045 6.7)."""
    out: list[bytes] = []
    for line in data.split(eol):
        text = _QP_UNSAFE.sub(_qp_escape, line)
        if text.endswith((b" ", b"\t")):
            text = text[:-1] + _QP_ESCAPE[text[-1]]
        while len(text) > _QP_LINE:
            # A soft break ("=" ending the line) must not split an "=XX" escape; every "="
            # left in the text starts one.
            cut = _QP_LINE - 1
            eq = text.rfind(b"=", cut - 2, cut)
            if eq != -1:
                cut = eq
            out.append(text[:cut] + b"=")
            text = text[cut:]
        out.append(text)
    return eol.join(out)


def _qp_splice(original: bytes, content: bytes, new: bytes, eol: bytes) -> bytes:
    """``new`` as quoted-printable, keeping ``original``'s encoded lines where the decoded
    lines (``content``) did not change and encoding only the lines around the edits: the
    edits are a pixel and a few old ones, and encoding a whole large body again cost several
    times what finding their place does. Falls back to encoding it all when the original's
    hard line breaks do not match its decoded lines one for one; the result decodes to
    ``new`` either way."""
    p = common_prefix(content, new, min(len(content), len(new)))
    q = common_suffix(content, new, min(len(content), len(new)) - p)
    # Widened to whole decoded lines: the kept prefix ends with an eol (or is empty), the
    # kept suffix starts with one (or is empty).
    ls = content.rfind(eol, 0, p)
    ls = 0 if ls < 0 else ls + len(eol)
    le = content.find(eol, len(content) - q)
    le = len(content) if le < 0 else le
    k, k2 = content.count(eol, ls), content.count(eol, le)
    # Each decoded eol is one hard line break of the original (checked below by decoding
    # the result): the kept suffix starts at the k2-th from the end, and the kept prefix ends
    # with the (k + 1)-th from the end. Walking back from the end reaches them soon, as the
    # pixel goes near the end.
    found = _hard_breaks_from_end(original, eol, k + 1 if ls else k2)
    if len(found) >= k2 and (not ls or len(found) == k + 1):
        e1 = found[k] + len(eol) if ls else 0
        e2 = found[k2 - 1] if k2 else len(original)
        if e1 <= e2:
            middle = new[ls : le + len(new) - len(content)]
            out = original[:e1] + _qp_encode(middle, eol) + original[e2:]
            if binascii.a2b_qp(out) == new:
                return out
    return _qp_encode(new, eol)


def _hard_breaks_from_end(data: bytes, eol: bytes, n: int) -> list[int]:
    """Offsets of the last ``n`` line breaks of quoted-printable ``data`` that are not soft
    ("=" before the eol), last first."""
    found: list[int] = []
    pos = len(data)
    while len(found) < n:
        i = data.rfind(eol, 0, pos)
        if i < 0:
            break
        if data[i - 1 : i] != b"=":
            found.append(i)
        pos = i
    return found


def _encode_transfer(data: bytes, cte: str, eol: bytes, trailing_eol: bool) -> bytes:
    if cte == "quoted-printable":
        return _qp_encode(data, eol)
    if cte == "base64":
        out = base64.encodebytes(data).replace(b"\n", eol).rstrip(b"\r\n")
        return out + eol if trailing_eol else out
    return data


def _codec(charset: str, content: bytes) -> str | None:
    """The codec to decode the HTML with, or None when its bytes can be searched as they are
    (ASCII-compatible, and an ASCII byte is always that ASCII character)."""
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError) as exc:
        raise BrokenMime(f"unknown charset {charset!r}") from exc
    name = info.name
    if name in _NOT_CHARSETS or not getattr(info, "_is_text_encoding", True):
        raise BrokenMime(f"unknown charset {charset!r}")
    if not name.startswith(_DECODE_FIRST):
        return None
    for width in (16, 32):
        if name == f"utf-{width}":
            # Keep the byte order the part was written in, BOM included, so the bytes
            # around the pixel come back unchanged; without a BOM, the first character
            # (markup, so ASCII) shows it.
            le, be = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) if width == 16 else \
                (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)
            if content.startswith(le):
                return f"utf-{width}-le"
            if content.startswith(be):
                return f"utf-{width}-be"
            return f"utf-{width}-be" if content[:1] == b"\x00" else f"utf-{width}-le"
    return name


def _rewrite_part(raw: bytes, part: Part, tag: str, is_own_pixel: Callable[[str], bool],
                  eol: bytes, links: LinkEdits | None = None
                  ) -> tuple[tuple[int, int, bytes] | None, int]:
    """The edit to ``part`` as (start, end, new bytes), None if nothing changes, and how many
    of our old pixels went. A body whose lines would exceed 998 octets goes quoted-printable
    (RFC 5322 2.1.1), its Content-Transfer-Encoding field with it."""
    body, removed, content = _rewrite_body(raw, part, tag, is_own_pixel, eol, links)
    if body is None:
        return None, 0
    if any(len(line) > _MAX_LINE for line in body.split(eol)):
        assert content is not None
        return (part.start, part.end, _qp_head(raw, part, eol) + _qp_encode(content, eol)), \
            removed
    return (part.body_start, part.end, body), removed


def _qp_head(raw: bytes, part: Part, eol: bytes) -> bytes:
    """``part``'s header block and the blank line after it, saying quoted-printable: its
    Content-Transfer-Encoding fields (folded lines too) out, ours last."""
    head_end, _ = split_head(raw, part.start, part.end)
    kept: list[bytes] = []
    skipping = False
    for line in raw[part.start : head_end].split(eol) if head_end > part.start else []:
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.split(b":", 1)[0].strip().lower() == _CTE_FIELD.lower()
        if not skipping:
            kept.append(line)
    return eol.join([*kept, _CTE_FIELD + b": quoted-printable", b"", b""])


def _rewrite_body(raw: bytes, part: Part, tag: str, is_own_pixel: Callable[[str], bool],
                  eol: bytes, links: LinkEdits | None = None
                  ) -> tuple[bytes | None, int, bytes | None]:
    """The new body bytes of ``part`` (None if nothing changes), how many of our old pixels
    went, and the new decoded content. Raises BrokenMime when the body cannot be rewritten
    without touching other bytes."""
    if not part.separated:
        raise BrokenMime("HTML part without a blank line after its headers")
    original = raw[part.body_start : part.end]
    cte = part.transfer_encoding
    content = _decode_transfer(original, cte)
    charset = part.headers.get_content_charset() or "us-ascii"
    codec = _codec(charset, content)
    max_line = _MAX_LINE if cte in _IDENTITY else None
    text_of: Callable[[str], str] | None = None
    if codec is None:
        # latin-1 maps every byte to one code point, so offsets and bytes survive unchanged.
        html = content.decode("latin-1")
        text_of = _text_of(charset)

        def encode(text: str) -> bytes:
            return text.encode("latin-1")
    else:
        try:
            html = content.decode(codec)
        except UnicodeDecodeError as exc:
            raise BrokenMime(f"HTML part not valid {charset}") from exc
        if html.encode(codec) != content:
            raise BrokenMime(f"HTML part in {charset} cannot be rewritten byte for byte")
        name = codec

        def encode(text: str) -> bytes:
            try:
                return text.encode(name)
            except UnicodeEncodeError as exc:
                raise BrokenMime(f"the pixel cannot be written in {charset}") from exc
    edits = links(html, text_of) if links is not None else []
    linked = _apply(html, edits)
    spliced, removed = splice_pixel(linked, tag, is_own_pixel, max_line, eol.decode())
    new_content = encode(spliced)
    if new_content == content:
        return None, 0, None
    if cte == "quoted-printable":
        encoded, current, text = original, content, html
        # One link at a time, the last first: each re-encodes only its own lines, so the
        # lines between links keep their bytes.
        for start, end, value in reversed(edits):
            text = text[:start] + value + text[end:]
            following = encode(text)
            encoded, current = _qp_splice(encoded, current, following, eol), following
        return _qp_splice(encoded, current, new_content, eol), removed, new_content
    trailing = original.endswith(b"\n")
    return _encode_transfer(new_content, cte, eol, trailing), removed, new_content


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` with non-overlapping ``edits`` (in order) made."""
    if not edits:
        return text
    out: list[str] = []
    last = 0
    for start, end, value in edits:
        out.append(text[last:start])
        out.append(value)
        last = end
    out.append(text[last:])
    return "".join(out)


def _text_of(charset: str) -> Callable[[str], str] | None:
    """How to read characters of HTML decoded as latin-1 in its own ``charset`` (None where
    latin-1 is that charset)."""
    name = codecs.lookup(charset).name
    if name == "latin-1":
        return None

    def text_of(text: str) -> str:
        return text.encode("latin-1").decode(name, "replace")

    return text_of
