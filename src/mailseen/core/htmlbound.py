"""Email HTML made cheap enough to sanitise: a bound on its size and on how deeply it nests.

An HTML parser (html5ever, inside nh3, as in browsers) checks "is a <p> open in scope?" by
walking its stack of open elements, so each tag costs as much as the nesting under it: 100,000
nested ``<div>`` s take about a minute. :func:`bound_html` decides, in time linear in the
length, what the sanitiser may see:

- short of :data:`MAX_HTML_CHARS` with at most :data:`UNCHECKED_TAGS` ``<`` in it, the HTML as
  it is: that few tags cannot nest deeply enough to matter (a start tag needs a ``<``);
- longer than that, nothing: the message is too complex to display safely, download it;
- otherwise the HTML rewritten by :func:`flatten`, which no parser nests deeper than
  :data:`MAX_DEPTH` elements plus those it implies (a ``<tbody>`` and ``<tr>`` around a
  ``<td>``): at most twice as deep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .htmlscan import _ATTR, _ATTRS, _COMMENT_REST, _RAW_END

__all__ = ["MAX_DEPTH", "MAX_HTML_CHARS", "TOO_COMPLEX", "UNCHECKED_TAGS", "Bounded",
           "bound_html", "flatten"]

# Chromium's parser stops nesting at 512; real mail (tables in tables) stays well under 60.
MAX_DEPTH = 200
# 10,000 fully nested tags cost nh3 under a second; the corpus's biggest mail has 1,653.
UNCHECKED_TAGS = 10_000
# More than twenty times the biggest newsletter in the test corpus (92 KB; inline images are
# not in it); flattening and sanitising this much takes a second or two.
MAX_HTML_CHARS = 2 * 1024 * 1024

TOO_COMPLEX = "This message is too complex to display safely; download it to read it."
FLATTENED = ("Parts of this message were nested too deeply to display safely and are shown "
             "flattened.")

# Void elements take no end tag and never hold others; "image" is parsed as "img".
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "image", "input",
                   "keygen", "link", "meta", "param", "source", "track", "wbr"})
# Content shown as it is (CSS), and raw-text content the sanitiser would drop anyway.
_KEEP_RAW = frozenset({"style"})
_DROP_RAW = frozenset(_RAW_END) - _KEEP_RAW - {"plaintext"}
# Dropped whole: foreign content (SVG, MathML) and templates parse by other rules, and the
# sanitiser drops them with everything inside anyway.
_DROP_TREE = frozenset({"svg", "math", "template", "noscript"})
_NAME = re.compile(r"[a-z][a-z0-9-]*\Z")
_ATTR_NAME = re.compile(r"[a-z_:][-a-z0-9_:.]*\Z")
# The same tokenizer rules as htmlscan: a tag ends at the first ">" outside a quoted value.
_TOKEN = re.compile(
    rf"""(?P<text>[^<]++)
    | (?P<end></(?P<endname>[A-Za-z][^\t\n\f\r />]*+){_ATTRS}(?:>|\Z))
    | (?P<start><(?P<name>[A-Za-z][^\t\n\f\r />]*+)(?P<attrs>{_ATTRS})>)
    | (?P<skip><!--{_COMMENT_REST}|<![^>]*+(?:>|\Z)|<\?[^>]*+(?:>|\Z)
        | </(?![A-Za-z])[^>]*+(?:>|\Z)
        | <[A-Za-z][^\t\n\f\r />]*+{_ATTRS}\Z)
    | (?P<lt><)""", re.S | re.X)


@dataclass(frozen=True)
class Bounded:
    html: str | None  # None: too complex to show (see ``note``)
    note: str  # "" when the HTML is shown as it came


@dataclass(frozen=True)
class Flat:
    html: str
    dropped: int  # start tags left out for nesting deeper than allowed


def bound_html(html: str) -> Bounded:
    """What of ``html`` the sanitiser may be given, and what the reader should be told."""
    if len(html) > MAX_HTML_CHARS:
        return Bounded(None, TOO_COMPLEX)
    if html.count("<") <= UNCHECKED_TAGS:
        return Bounded(html, "")
    flat = flatten(html)
    return Bounded(flat.html, FLATTENED if flat.dropped else "")


def _start_tag(name: str, attrs: str) -> str:
    """A start tag written so that every parser reads the same name and attributes."""
    out = [name]
    for m in _ATTR.finditer(attrs):
        attr = m.group(1).lower()
        if not _ATTR_NAME.match(attr):
            continue
        value = m.group(2)
        if value is None:
            out.append(attr)
            continue
        if value[:1] in ("'", '"'):
            value = value[1:-1] if len(value) > 1 and value[-1] == value[0] else value[1:]
        # Character references stay as written: they mean the same inside double quotes.
        out.append(f'{attr}="{value.replace(chr(34), "&quot;")}"')
    return "<" + " ".join(out) + ">"


def flatten(html: str, max_depth: int = MAX_DEPTH) -> Flat:
    """``html`` re-written with every element closed in order, at most ``max_depth`` deep.

    Tags are read the way an HTML tokenizer reads them and written out again in a form with
    one reading only (quoted attributes, ``<`` in text escaped, comments and doctypes left
    out), so the structure the sanitiser parses is the one counted here: start tags that
    would nest deeper are left out (their text stays), and end tags close what they close.
    """
    out: list[str] = []
    stack: list[str] = []
    open_count: dict[str, int] = {}  # name -> how many are on the stack
    dropped = 0
    pos = 0
    while pos < len(html):
        resume = len(html)
        for m in _TOKEN.finditer(html, pos):
            kind = m.lastgroup
            if kind == "text":
                out.append(m.group())
            elif kind == "start":
                name = m.group("name").lower()
                if name in _RAW_END or name in _DROP_TREE:
                    resume = _after_raw(html, m.end(), name, out)
                    break
                if name in _VOID:
                    out.append(_start_tag(name, m.group("attrs")))
                elif len(stack) >= max_depth or not _NAME.match(name):
                    dropped += 1
                else:
                    out.append(_start_tag(name, m.group("attrs")))
                    stack.append(name)
                    open_count[name] = open_count.get(name, 0) + 1
            elif kind == "end":
                name = m.group("endname").lower()
                if open_count.get(name):
                    while True:
                        top = stack.pop()
                        open_count[top] -= 1
                        out.append(f"</{top}>")
                        if top == name:
                            break
            elif kind == "lt":
                out.append("&lt;")
            # "skip": comments, doctypes, processing instructions, bogus end tags, and a tag
            # cut off by the end of the text, which is no tag
        pos = resume
    out.extend(f"</{name}>" for name in reversed(stack))
    return Flat("".join(out), dropped)


def _after_raw(html: str, pos: int, name: str, out: list[str]) -> int:
    """Where reading goes on after the start tag of a raw-text or dropped element ``name``
    that ended at ``pos``; the CSS of a ``<style>`` goes to ``out`` as it is."""
    if name == "plaintext":  # everything after it is text
        out.append(html[pos:].replace("<", "&lt;"))
        return len(html)
    if name in _DROP_TREE:
        return _skip_tree(html, pos, name)
    found = _RAW_END[name].search(html, pos)
    raw_end = found.start() if found else len(html)
    if name in _KEEP_RAW:
        out.append(f"<{name}>{html[pos:raw_end]}</{name}>")
    return raw_end  # its end tag is read (and ignored) next


def _skip_tree(html: str, pos: int, name: str) -> int:
    """The offset just past the end tag that closes the ``name`` element open at ``pos``."""
    depth = 1
    while pos < len(html):
        m = _TOKEN.match(html, pos)
        assert m is not None
        pos = m.end()
        if m.lastgroup == "start":
            inner = m.group("name").lower()
            if inner == name:
                depth += 1
            elif inner in _RAW_END and inner != "plaintext":
                found = _RAW_END[inner].search(html, pos)
                pos = found.start() if found else len(html)
        elif m.lastgroup == "end" and m.group("endname").lower() == name:
            depth -= 1
            if depth == 0:
                break
    return pos
