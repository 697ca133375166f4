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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import tinycss2

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


# -- our URLs in CSS ---------------------------------------------------------------------
# A quoted pixel can also be a CSS image (``background-image: url(…/t/TOKEN.gif)``), in a
# <style> or a style attribute, written with CSS escapes (``\75 rl(``) or character
# references. Found context-free (a match inside a comment or a script is our URL all the
# same) and tokenized by tinycss2 only where a URL could hide; our url() becomes ``none`` and
# our strings ``""`` (``url("")`` and ``@import ""`` fetch nothing).
# Each pattern starts with a literal, which the regex engine searches for quickly.
_STYLE_OPEN = re.compile(r"<style\b[^>]*+>", re.I)
_STYLE_CLOSE = re.compile(r"</style", re.I)
# Only style attributes whose value has a "(" or a character reference (which may hide one)
# match: the rest ("padding:0;color:#333") cannot fetch.
_STYLE_ATTR = re.compile(rf"""style{_WS}*+={_WS}*+("""
                         r"""("[^"(&]*+[(&][^"]*+"|'[^'(&]*+[(&][^']*+'"""
                         r"""|[^\t\n\f\r >(&]*+[(&][^\t\n\f\r >]*+))""", re.I)
_BEFORE_ATTR = frozenset("\t\n\f\r /\"'")
# The same, on lowercased text: starting with a literal, and case-sensitive, the regex engine
# finds candidates by a plain substring search instead of trying every position.
_STYLE_ATTR_LOW = re.compile(_STYLE_ATTR.pattern)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# Where a URL stands in CSS without escapes: url(…), and a string opening a function's
# arguments or following a comma (image-set("…" 1x, "…" 2x)) or @import.
_CSS_URLISH = re.compile(r"""url\(\s*+["']?([^"')\s]*)|(?:[(,]|@import)\s*+["']([^"']*)""",
                         re.I)
_CSS_LINE = re.compile(r"\r\n|[\r\n\f]")
# What CSS without escapes needs in order to fetch: url(), @import, or a function that takes
# image URLs as strings (image(), image-set(), cross-fade(), src()).
_FETCHING = ("url(", "@import", "image", "cross-fade", "src(")


def _own_css(html: str, is_own: Callable[[str], bool]) -> list[tuple[int, int, str]]:
    """(start, end, replacement) for each of our URLs in the CSS of ``html``."""
    if "(" not in html and "@" not in html:
        return []
    edits: list[tuple[int, int, str]] = []
    for m in _STYLE_OPEN.finditer(html):
        close = _STYLE_CLOSE.search(html, m.end())
        end = close.start() if close is not None else len(html)
        css = html[m.end() : end]
        if _may_be_ours(css, is_own):
            base = m.end()
            edits.extend((base + a, base + b, r) for a, b, r in _css_edits(css, is_own))
    for m in _style_attributes(html):
        raw = m.group(1)
        quoted = raw[:1] in ("'", '"')
        css = raw[1:-1] if quoted else raw
        if "&" in css:
            css = htmllib.unescape(css)
        if "(" not in css or not _may_be_ours(css, is_own):
            continue
        found = _css_edits(css, is_own)
        if found:
            # Written back whole and escaped: references cannot map to offsets one for one.
            fixed = htmllib.escape(_apply(css, found), quote=True)
            edits.append((m.start(1), m.end(1), f'"{fixed}"'))
    return edits


def _style_attributes(html: str) -> Iterable[re.Match[str]]:
    """Each style attribute that may fetch, found by a plain search for "style" in a
    lowercased copy (much faster than letting a case-blind regex try every position)."""
    low = html.lower()
    if len(low) != len(html):  # lowercasing changed lengths (U+0130): offsets would not agree
        low = html.translate(_ASCII_LOWER)
    for candidate in _STYLE_ATTR_LOW.finditer(low):
        pos = candidate.start()
        m = _STYLE_ATTR.match(html, pos) if pos and html[pos - 1] in _BEFORE_ATTR else None
        if m is not None:
            yield m


def _may_be_ours(css: str, is_own: Callable[[str], bool]) -> bool:
    """Whether tokenizing ``css`` could find one of our URLs: it has escapes, or one of the
    URLs and strings a plain match finds is ours."""
    if "\\" in css:
        return True
    low = css.lower()
    if not any(word in low for word in _FETCHING):
        return False
    return any(is_own(m.group(1) if m.group(1) is not None else m.group(2))
               for m in _CSS_URLISH.finditer(css))


def _css_edits(css: str, is_own: Callable[[str], bool]) -> list[tuple[int, int, str]]:
    lines = [0, *(m.end() for m in _CSS_LINE.finditer(css))]
    edits: list[tuple[int, int, str]] = []

    def offset(node: tinycss2.ast.Node) -> int:
        # tinycss2 counts lines after making every CRLF, CR and FF one LF; columns agree.
        return lines[int(node.source_line) - 1] + int(node.source_column) - 1

    def walk(nodes: list[tinycss2.ast.Node], end: int) -> None:
        for i, node in enumerate(nodes):
            node_end = offset(nodes[i + 1]) if i + 1 < len(nodes) else end
            if node.type == "url" and is_own(node.value):
                edits.append((offset(node), node_end, "none"))
            elif node.type == "string" and is_own(node.value):
                edits.append((offset(node), node_end, '""'))
            elif node.type == "function":
                walk(node.arguments, _inner_end(css, node_end))
            elif node.type in ("() block", "[] block", "{} block"):
                walk(node.content, _inner_end(css, node_end))

    walk(tinycss2.parse_component_value_list(css, skip_comments=False), len(css))
    return edits


def _inner_end(css: str, end: int) -> int:
    """Where a block's content ends: before its closing bracket (none at the end of text)."""
    return end - 1 if end > 0 and css[end - 1] in ")]}" else end


def _apply(text: str, edits: Iterable[tuple[int, int, str]]) -> str:
    out: list[str] = []
    last = 0
    for start, end, new in sorted(edits):
        out.append(text[last:start])
        out.append(new)
        last = end
    out.append(text[last:])
    return "".join(out)


def splice_pixel(html: str, tag: str, is_own_pixel: Callable[[str], bool],
                 max_line: int | None = None, eol: str | None = None) -> tuple[str, int]:
    """Return ``html`` with our earlier pixels removed (``<img>`` and CSS images) and ``tag``
    before the last real ``</body>`` (else ``</html>``, else at the end), and how many
    earlier pixels went.

    With ``max_line`` the tag is put on a line of its own when inserting it inline would make
    its line longer than that, so 7bit/8bit parts keep within SMTP's 998-octet limit; ``eol``
    is the line ending to use for that (default: the one ``html`` uses).
    """
    known: dict[str, bool] = {}

    def is_own(url: str) -> bool:
        # Newsletters repeat their image URLs (spacers, backgrounds): each is judged once.
        found = known.get(url)
        if found is None:
            found = known[url] = is_own_pixel(url)
        return found

    scan = scan_html(html, is_own)
    at = scan.body_close if scan.body_close is not None else scan.html_close
    if at is None:
        at = len(html)
    edits: list[tuple[int, int, str]] = []
    for edit in sorted([*((start, end, "") for start, end in scan.own_pixels),
                        *_own_css(html, is_own)]):
        if not edits or edit[0] >= edits[-1][1]:  # an <img> we drop takes its style with it
            edits.append(edit)
    shift = sum(len(new) - (end - start) for start, end, new in edits if end <= at)
    cleaned = _apply(html, edits) if edits else html
    if not tag:
        return cleaned, len(edits)
    at += shift
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
    return cleaned[:at] + insert + cleaned[at:], len(edits)
