"""Which links of an email's HTML click tracking may follow, and the edits that point them at
our redirect, without parsing and re-serialising the HTML.

A link is rewritten only when all of these hold (docs/tracking.md, "Click tracking"):
- it is an ``<a href>`` outside comments (Outlook's conditional blocks included) and raw-text
  elements, whose URL a browser reads as absolute ``http(s)``: ``mailto:``, ``tel:``,
  ``#anchors``, relative and other links stay as written;
- it is not an unsubscribe link: one of the ``List-Unsubscribe`` header's targets, or a link
  whose text or URL says unsubscribe (in a few languages);
- it is not inside quoted older mail: a ``<blockquote>``, an element whose class marks a
  client's quote (``gmail_quote``, ``yahoo_quoted``, ``protonmail_quote``), or anything after
  a marker that starts one (Outlook's ``divRplyFwdMsg`` …);
- it is not already one of ours.

Only the bytes of the ``href`` value change; everything else keeps its bytes.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from html.entities import html5

from .htmlscan import _ATTR, _ATTRS, _COMMENT_REST, _RAW_END, _RAW_TEXT
from .urls import browser_url

__all__ = ["Link", "find_links", "link_edits", "list_unsubscribe_of", "list_unsubscribe_urls",
           "unescape_attribute"]

_TOKEN = re.compile(
    rf"""(?P<comment><!--{_COMMENT_REST})
    | <![^>]*+(?:>|\Z)
    | <\?[^>]*+(?:>|\Z)
    | </(?P<close>[A-Za-z][^\t\n\f\r />]*+){_ATTRS}(?:>|\Z)
    | </(?![A-Za-z>])[^>]*+(?:>|\Z)
    | <(?P<open>[A-Za-z][^\t\n\f\r />]*+)(?P<attrs>{_ATTRS})(?:>|\Z)
    """, re.S | re.X)
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "param", "source", "track", "wbr"})
# Class names mail clients give the element that holds the quoted message (Gmail, Yahoo,
# Proton); a <blockquote> is quoted whatever its class (Apple Mail, Thunderbird: type=cite).
_QUOTE_CLASSES = frozenset({"gmail_quote", "yahoo_quoted", "protonmail_quote"})
# Elements after which the rest of the body is the quoted message: Outlook on the web and new
# Outlook (divRplyFwdMsg, appendonsend, mail-editor-reference-message-container), Outlook for
# Mac (OLK_SRC_BODY_SECTION), Zimbra (zwchr), classic Outlook's header block.
_QUOTE_START_IDS = frozenset({"divrplyfwdmsg", "appendonsend",
                              "mail-editor-reference-message-container",
                              "olk_src_body_section", "zwchr"})
_QUOTE_START_CLASSES = frozenset({"outlookmessageheader"})
# What an attribute list must contain (lower-cased) for the tag to be one of those markers.
_MARKERS = (*_QUOTE_CLASSES, *_QUOTE_START_IDS, *_QUOTE_START_CLASSES, "_mailoriginal")
# What an unsubscribe link says, in its text or URL (lower-cased, accents kept).
_UNSUBSCRIBE = re.compile(
    r"unsubscri|opt[\s_-]?out|abbestell|abmeld|d[ée]sabonn|d[ée]sinscri|darse de baja|"
    r"cancelar (?:la )?suscripci|disiscriv|cancella(?:re)? (?:l')?iscrizione|uitschrijv|"
    r"afmeld|avregistrer|avslutt|wypisz|email preferences|manage (?:your )?subscription")
_TAGS = re.compile(r"<[^>]*+>?")
_REFERENCE = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[A-Za-z][A-Za-z0-9]*;?)")


def unescape_attribute(value: str) -> str:
    """Character references in an attribute value resolved as the HTML tokenizer does
    there (HTML Living Standard 13.2.5.73): a named reference without its ";" is left as
    written when an "=" or a letter or digit follows, so ``?a=1&region=us`` keeps its
    ``&region`` (``html.unescape``, made for text, would give "®ion")."""
    if "&" not in value:
        return value

    def one(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref[0] == "#":
            return htmllib.unescape(m.group())
        if ref.endswith(";"):  # a whole name, or a legacy prefix followed by a letter: kept
            return htmllib.unescape(m.group()) if ref in html5 else m.group()
        after = value[m.end() : m.end() + 1]
        if after == "=":
            return m.group()
        # Without ";", only a legacy name that is the whole run of letters and digits.
        return htmllib.unescape(m.group()) if ref in _LEGACY else m.group()

    return _REFERENCE.sub(one, value)
_ANGLE = re.compile(r"<([^>]*)>")
# Named references a browser resolves without their ";" (the HTML5 list: no ";" in the name).
_LEGACY = frozenset(name for name in html5 if not name.endswith(";"))


@dataclass(frozen=True)
class Link:
    """A link click tracking may follow: where its ``href`` value is written (between the
    quotes, if any) and the URL a browser goes to (WHATWG-normalised)."""

    start: int
    end: int
    url: str


def list_unsubscribe_urls(value: str | None) -> frozenset[str]:
    """The http(s) targets of a ``List-Unsubscribe`` header (RFC 2369: ``<URL>`` items),
    normalised as a browser reads them."""
    found: set[str] = set()
    for item in _ANGLE.findall(value or ""):
        parsed = browser_url("".join(item.split()))
        if parsed is not None and parsed.scheme in ("http", "https"):
            found.add(parsed.href)
    return frozenset(found)


def list_unsubscribe_of(raw: bytes) -> frozenset[str]:
    """The http(s) ``List-Unsubscribe`` targets in the header of message ``raw``."""
    end = raw.find(b"\n\n")
    crlf = raw.find(b"\r\n\r\n")
    ends = [e for e in (end, crlf) if e >= 0]
    head = raw[: min(ends)] if ends else raw
    if b"list-unsubscribe" not in head.lower():
        return frozenset()
    headers = BytesHeaderParser(policy=compat32).parsebytes(head + b"\n\n")
    return frozenset().union(*(list_unsubscribe_urls(str(v))
                               for v in headers.get_all("List-Unsubscribe", [])))


def find_links(html: str, *, skip: frozenset[str] = frozenset(),
               is_ours: Callable[[str], bool] = lambda url: False,
               text_of: Callable[[str], str] | None = None) -> list[Link]:
    """The links of ``html`` that may be tracked, in document order. ``skip`` holds URLs
    never to track (the List-Unsubscribe targets); ``text_of`` turns the HTML's characters
    into text where ``html`` was decoded byte for byte (latin-1) from another charset."""
    if "href" not in html and "HREF" not in html.upper():
        return []
    return [link for link, kept in _walk(html, skip, is_ours, text_of) if kept]


def link_edits(html: str, new_url: Callable[[Link], str | None], *,
               skip: frozenset[str] = frozenset(),
               is_ours: Callable[[str], bool] = lambda url: False,
               text_of: Callable[[str], str] | None = None) -> list[tuple[int, int, str]]:
    """(start, end, new value) for each trackable link whose ``new_url`` is not None, in
    document order; the value goes between the attribute's quotes as they were."""
    edits = []
    for link in find_links(html, skip=skip, is_ours=is_ours, text_of=text_of):
        new = new_url(link)
        if new is not None:
            edits.append((link.start, link.end, htmllib.escape(new, quote=True)))
    return edits


def _walk(html: str, skip: frozenset[str], is_ours: Callable[[str], bool],
          text_of: Callable[[str], str] | None) -> Iterable[tuple[Link, bool]]:
    depth: dict[str, int] = {}
    quotes: list[tuple[str, int]] = []  # (element, its depth) of each open quote element
    rest_quoted = False
    pending: tuple[Link, bool, int] | None = None  # an <a> whose text is still to come
    pos, n = 0, len(html)
    while True:
        lt = html.find("<", pos)
        if lt < 0:
            break
        m = _TOKEN.match(html, lt)
        if m is None:
            pos = lt + 1
            continue
        pos = m.end()
        if m.group("comment") is not None:
            continue
        close = m.group("close")
        if close is not None:
            name = close.lower()
            if name == "a" and pending is not None:
                yield _judged(html, pending, lt, skip, is_ours, text_of)
                pending = None
            if name in depth and depth[name] > 0:
                depth[name] -= 1
                while quotes and quotes[-1][0] == name and depth[name] < quotes[-1][1]:
                    quotes.pop()
            continue
        name = m.group("open")
        if name is None:
            continue
        name = name.lower()
        if name == "a" and pending is not None:  # an <a> inside an <a> ends the first
            yield _judged(html, pending, lt, skip, is_ours, text_of)
            pending = None
        # Attributes are read only where they can matter: a link, or a tag that names one
        # of the quote markers (most tags of a newsletter do neither).
        low = m.group("attrs").lower()
        marked = bool(low) and any(marker in low for marker in _MARKERS)
        attrs = (_attributes(html, m.start("attrs"), m.end("attrs"))
                 if name == "a" or marked else {})
        if name not in _VOID:
            depth[name] = depth.get(name, 0) + 1
            classes = set((_value(html, attrs.get("class")) or "").lower().split())
            if name == "blockquote" or classes & _QUOTE_CLASSES:
                quotes.append((name, depth[name]))
        if marked and ((_value(html, attrs.get("id")) or "").lower() in _QUOTE_START_IDS
                       or (_value(html, attrs.get("class")) or "").lower()
                       in _QUOTE_START_CLASSES
                       or (name == "a" and _value(html, attrs.get("name")) == "_MailOriginal")):
            rest_quoted = True
        if name == "a" and "href" in attrs:
            link = _link(html, attrs["href"], text_of)
            if link is not None:
                pending = (link, bool(quotes) or rest_quoted, pos)
        elif name in _RAW_TEXT:
            if name == "plaintext":
                break
            end = _RAW_END[name].search(html, pos)
            if end is None:
                break
            pos = end.start()
    if pending is not None:
        yield _judged(html, pending, n, skip, is_ours, text_of)


def _judged(html: str, pending: tuple[Link, bool, int], text_end: int, skip: frozenset[str],
            is_ours: Callable[[str], bool], text_of: Callable[[str], str] | None
            ) -> tuple[Link, bool]:
    link, quoted, text_start = pending
    if quoted or link.url in skip or is_ours(link.url):
        return link, False
    text = _TAGS.sub(" ", html[text_start:text_end])
    text = htmllib.unescape(text_of(text) if text_of is not None else text)
    said = " ".join(text.lower().split())
    return link, _UNSUBSCRIBE.search(said) is None and _UNSUBSCRIBE.search(
        link.url.lower()) is None


def _attributes(html: str, start: int, end: int) -> dict[str, tuple[int, int]]:
    """Each attribute's value span (quotes included), the first of each name (browsers
    ignore repeats)."""
    found: dict[str, tuple[int, int]] = {}
    for m in _ATTR.finditer(html, start, end):
        name = m.group(1).lower()
        if name not in found:
            found[name] = (m.start(2), m.end(2)) if m.group(2) is not None else (m.end(), m.end())
    return found


def _value(html: str, span: tuple[int, int] | None) -> str | None:
    if span is None:
        return None
    raw = html[span[0] : span[1]]
    if raw[:1] in ("'", '"'):
        raw = raw[1:-1] if len(raw) > 1 and raw[-1] == raw[0] else raw[1:]
    return unescape_attribute(raw)


def _link(html: str, span: tuple[int, int], text_of: Callable[[str], str] | None
          ) -> Link | None:
    start, end = span
    raw = html[start:end]
    if raw[:1] in ("'", '"'):
        if len(raw) < 2 or raw[-1] != raw[0]:
            return None  # an unclosed quote: the tag runs on; leave it be
        start, end, raw = start + 1, end - 1, raw[1:-1]
    if not raw:
        return None
    if text_of is not None:
        raw = text_of(raw)
        if "\ufffd" in raw:
            return None
    text = unescape_attribute(raw)
    parsed = browser_url(text.strip("\t\n\f\r "))
    if parsed is None or parsed.scheme not in ("http", "https"):
        return None
    return Link(start, end, parsed.href)
