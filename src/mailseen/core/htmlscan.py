"""Find where a pixel goes in an email's HTML without parsing and re-serialising it.

A plain ``rfind("</body>")`` is wrong for mail: a ``</body>`` can sit in a comment, an Outlook
conditional block (``<!--[if mso]>…<![endif]-->`` or the downlevel-revealed ``<![if …]>…
<![endif]>``), a script/style/textarea/title, or an attribute value. This scanner walks the
markup the way an HTML tokenizer does, just enough to tell those apart, and reports offsets into
the string it was given so the caller can splice.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Scan", "scan_html", "splice_pixel"]

# Elements whose content is raw text: nothing inside is a tag (HTML Living Standard, 13.1.2).
# noscript is not among them: mail clients never run scripts, so its content is markup.
_RAW_TEXT = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed",
                       "noframes", "plaintext"})

# Only these five are whitespace to an HTML tokenizer; ``\s`` would also match U+00A0, which
# is a continuation byte of UTF-8 text seen through latin-1.
_WS = r"[\t\n\f\r ]"
# Attributes as the tokenizer reads them: a quote only opens a value right after "=", so
# ``<p class=it's>`` holds no quoted string (a quote inside a name or unquoted value is a
# plain character there).
# Possessive throughout, as the HTML tokenizer never backtracks: a backtracking attribute list
# tried every way of splitting "<a b='<a b='…" into names and values (quadratic; see
# bench/scan_pathological.py).
_ATTRS = (
    rf"(?:[\t\n\f\r /]++|[^\t\n\f\r />][^\t\n\f\r />=]*+"
    rf"(?:{_WS}*+={_WS}*+(?:\"[^\"]*+(?:\"|\Z)|'[^']*+(?:'|\Z)|[^\t\n\f\r >]*+))?+)*+"
)
# What follows "<!--" up to the first "-->" or "--!>" (or the end), and a downlevel-revealed
# block's content up to the first "<![endif]>": the same as a lazy ".*?" before the closer,
# written as runs of other characters so the regex engine does not try the closer at every
# character.
_COMMENT_REST = r"(?:-?>|[^-]*+(?:-(?!-!?>)[^-]*+)*+(?:--!?>|\Z))"
_COND_BODY = rf"[^<]*+(?:<(?!!\[endif\]{_WS}*>)[^<]*+)*+"
_MARKUP_SOURCE = rf"""
      (?P<comment><!--{_COMMENT_REST})
    | (?P<cond><!\[if[^\]>]*\]>)(?P<condbody>{_COND_BODY})(?:<!\[endif\]{_WS}*>|\Z)
    | <![^>]*(?:>|\Z)
    | <\?[^>]*(?:>|\Z)
    | </(?P<close>[A-Za-z][^\t\n\f\r />]*){_ATTRS}(?:>|\Z)
    | </(?![A-Za-z>])[^>]*(?:>|\Z)
    | <(?P<open>[A-Za-z][^\t\n\f\r />]*)(?P<attrs>{_ATTRS})(?:>|\Z)
    """
# Markup the scan has nothing to do with, consumed whole (so that nothing inside an attribute
# value or a comment is taken for a tag) by one regex match rather than one Python step per
# tag: text, start tags other than <img> and the raw-text elements, end tags other than
# </body> and </html> (inside a conditional block: all end tags, and nested conditionals'
# openers), plain comments, doctypes and other bogus comments, processing instructions, and
# a "<" that starts no tag. At each "<" it takes the token _MARKUP_SOURCE would take, so the
# token it stops at is the one a token-by-token walk would reach.
_NAME_END = r"(?=[\t\n\f\r />]|\Z)"
_SKIP_START_TAG = (rf"<(?!(?:img|{'|'.join(sorted(_RAW_TEXT))}){_NAME_END})"
                   rf"[A-Za-z][^\t\n\f\r />]*{_ATTRS}(?:>|\Z)")
_SKIP_END_TAG = rf"</(?!(?:body|html){_NAME_END})[A-Za-z][^\t\n\f\r />]*{_ATTRS}(?:>|\Z)"
_SKIP_ANY_END_TAG = rf"</[A-Za-z][^\t\n\f\r />]*{_ATTRS}(?:>|\Z)"
_SKIP_REST = rf"""
    | <!--(?!\[if){_COMMENT_REST}
    | <!(?!--|\[if[^\]>]*\]>)[^>]*+(?:>|\Z)
    | <\?[^>]*+(?:>|\Z)
    | </(?![A-Za-z>])[^>]*+(?:>|\Z)
    | </(?=>)
    | <(?![!?/A-Za-z])
    """
_NESTED_OPENER = r"<!--\[if[^\]>]*\]>|<!\[if[^\]>]*\]>"
# One match: what is skipped, then the next token to act on (group "tok"), or the end.
_MARKUP = re.compile(
    rf"(?:[^<]++|{_SKIP_START_TAG}|{_SKIP_END_TAG}{_SKIP_REST})*+"
    rf"(?:(?P<tok>{_MARKUP_SOURCE})|\Z)", re.S | re.X | re.I)
# Inside a conditional block a nested conditional's opener is passed over and its content
# scanned in place: finding each nested block's end first would make piled-up openers
# quadratic, and only our pixels are looked for there.
_MARKUP_INNER = re.compile(
    rf"(?:[^<]++|{_SKIP_START_TAG}|{_SKIP_ANY_END_TAG}|{_NESTED_OPENER}{_SKIP_REST})*+"
    rf"(?:(?P<tok>{_MARKUP_SOURCE})|\Z)", re.S | re.X | re.I)
_ATTR = re.compile(
    rf"""([^\t\n\f\r />][^\t\n\f\r />=]*)(?:{_WS}*={_WS}*("[^"]*"?|'[^']*'?|[^\t\n\f\r >]*))?"""
)
_COND_COMMENT = re.compile(r"<!--\[if[^\]]*\]>", re.I)
_RAW_END = {name: re.compile(rf"</{name}[\t\n\f\r />]", re.I) for name in _RAW_TEXT}


@dataclass
class Scan:
    body_close: int | None = None  # offset of the last real "</body"
    html_close: int | None = None  # offset of the last real "</html"
    own_pixels: list[tuple[int, int]] = field(default_factory=list)  # spans of our old <img>s


def scan_html(html: str, is_own_pixel: Callable[[str], bool]) -> Scan:
    """Tokenize just enough of ``html`` to find the real closing tags and our own pixels."""
    scan = Scan()
    _scan(html, 0, len(html), scan, is_own_pixel, True)
    return scan


def _scan(html: str, pos: int, endpos: int, scan: Scan, is_own_pixel: Callable[[str], bool],
          closes: bool) -> None:
    """Scan ``html[pos:endpos]``; with ``closes`` False only look for our pixels (inside an
    Outlook conditional block, whose markup some clients render but whose end tags we
    must not take as the document's)."""
    match = (_MARKUP if closes else _MARKUP_INNER).match
    while True:
        m = match(html, pos, endpos)
        assert m is not None  # the pattern matches the empty string at the end
        if m.group("tok") is None:
            return
        start = m.start("tok")
        pos = m.end()
        comment = m.group("comment")
        if comment is not None:
            cond = _COND_COMMENT.match(comment)
            if cond is not None:
                # Outlook renders the inside, so an old pixel there would load.
                closer = 4 if comment.endswith("--!>") else 3 if comment.endswith("-->") else 0
                _scan(html, start + cond.end(), m.end() - closer, scan, is_own_pixel, False)
            continue
        if m.group("cond") is not None:
            _scan(html, m.start("condbody"), m.end("condbody"), scan, is_own_pixel, False)
            continue
        close = m.group("close")
        if close is not None:
            if closes:
                name = close.lower()
                if name == "body":
                    scan.body_close = start
                elif name == "html":
                    scan.html_close = start
            continue
        name = m.group("open")
        if name is None:
            continue
        name = name.lower()
        if name == "img":
            src = _src(m.group("attrs"))
            if src is not None and is_own_pixel(src):
                scan.own_pixels.append((start, m.end()))
        elif name in _RAW_TEXT:
            if name == "plaintext":
                return
            end = _RAW_END[name].search(html, pos, endpos)
            if end is None:
                return
            pos = end.start()


def _src(attrs: str) -> str | None:
    """The value of the first ``src`` attribute (a repeated attribute is ignored by browsers),
    with character references resolved."""
    for m in _ATTR.finditer(attrs):
        if m.group(1).lower() == "src":
            value = m.group(2) or ""
            if value[:1] in ("'", '"'):
                value = value[1:-1] if len(value) > 1 and value[-1] == value[0] else value[1:]
            return htmllib.unescape(value)
    return None


def splice_pixel(html: str, tag: str, is_own_pixel: Callable[[str], bool],
                 max_line: int | None = None, eol: str | None = None) -> tuple[str, int]:
    """Return ``html`` with our earlier pixels removed and ``tag`` before the last real
    ``</body>`` (else ``</html>``, else at the end), and how many earlier pixels went.

    With ``max_line`` the tag is put on a line of its own when inserting it inline would make
    its line longer than that, so 7bit/8bit parts keep within SMTP's 998-octet limit; ``eol``
    is the line ending to use for that (default: the one ``html`` uses).
    """
    scan = scan_html(html, is_own_pixel)
    at = scan.body_close if scan.body_close is not None else scan.html_close
    if at is None:
        at = len(html)
    parts: list[str] = []
    last = 0
    removed_before_at = 0
    for start, end in sorted(scan.own_pixels):
        parts.append(html[last:start])
        if end <= at:
            removed_before_at += end - start
        last = end
    parts.append(html[last:])
    cleaned = "".join(parts)
    if not tag:
        return cleaned, len(scan.own_pixels)
    at -= removed_before_at
    insert = tag
    if max_line is not None:
        line_start = cleaned.rfind("\n", 0, at) + 1
        line_end = cleaned.find("\n", at)
        if line_end == -1:
            line_end = len(cleaned)
        if line_end - line_start + len(tag) > max_line:
            if eol is None:
                eol = "\r\n" if "\r\n" in cleaned else "\n"
            insert = eol + tag + eol
    return cleaned[:at] + insert + cleaned[at:], len(scan.own_pixels)
