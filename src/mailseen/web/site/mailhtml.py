"""Mail made safe to show in the web app, and the text conversions compose needs.

Email HTML is hostile input. :func:`sanitize` keeps what a reader needs (layout, inline
styles, links, images from the message itself) and drops everything that runs or fetches:
scripts, event handlers, forms, frames, SVG, meta refresh, ``javascript:`` links, and CSS
that loads anything. Remote images stay out unless asked for, and our own tracking pixels
never get in, so the team reading its mail never counts as a view. The page that shows the
result adds a sandboxed iframe and a strict Content-Security-Policy on top (see
ui_conversation): two layers, either of which would do alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import unquote

import nh3
from markupsafe import Markup, escape

__all__ = [
    "Cleaned",
    "html_to_text",
    "linkify",
    "sanitize",
]

_TAGS = (set(nh3.ALLOWED_TAGS) | {"font", "center", "big", "tfoot", "style"}) - {"map", "area"}
# Dropped with everything inside them (the rest of what is not allowed keeps its text).
_DROP_WITH_CONTENT = {"script", "title", "head", "noscript", "template", "textarea", "select",
                      "svg", "math", "iframe", "object", "embed", "audio", "video", "canvas"}
_COMMON = {"style", "dir", "lang", "title", "align", "valign", "width", "height", "bgcolor",
           "border", "class", "id"}
_ATTRIBUTES = {
    "*": _COMMON,
    "a": {"href", "name"},
    "img": {"src", "alt"},
    "table": {"cellpadding", "cellspacing", "summary"},
    "td": {"colspan", "rowspan", "nowrap"},
    "th": {"colspan", "rowspan", "nowrap", "scope"},
    "col": {"span"}, "colgroup": {"span"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type"}, "ul": {"type"}, "li": {"value"},
    "time": {"datetime"},
}
_LINK = re.compile(r"(?i)^(?:https?://[^\s]|mailto:|tel:)")
_REMOTE = re.compile(r"(?i)^https?://[^\s/]")
_DATA_IMAGE = re.compile(r"(?i)^data:image/(?:png|gif|jpeg|webp);base64,[A-Za-z0-9+/=\s]*$")
# CSS functions that fetch (CSS Values 4 adds src(); image-set() takes bare strings), and
# IE's expression(). Renamed, the declaration is invalid and the browser skips it.
_CSS_FETCH = re.compile(r"(?i)(?:url|src|image-set|image|cross-fade|element|expression|paint)"
                        r"\s*\(")
_CSS_AT = re.compile(r"(?i)@(?:import|font-face|namespace)")
# With its attributes (nh3 keeps the common ones, class and title among them, on <style>).
_STYLE_BLOCK = re.compile(r"<style\b([^>]*)>(.*?)</style>", re.S)


@dataclass(frozen=True)
class Cleaned:
    html: str
    blocked_images: int  # remote images left out; shown only when the reader asks


def defuse_css(text: str) -> str:
    """CSS that cannot load anything. Escapes go first: ``\\75 rl(`` is ``url(`` to CSS."""
    text = text.replace("\\", "")
    return _CSS_AT.sub("@blocked", _CSS_FETCH.sub("blocked(", text))


def sanitize(html: str, *, images: bool = False, is_own_pixel: Callable[[str], bool],
             inline: Mapping[str, str] | None = None, styles: bool = True) -> Cleaned:
    """``html`` with nothing that runs or fetches. ``images`` lets remote ``<img>`` through
    (never our own pixels); ``inline`` maps Content-IDs to data: URLs for ``cid:`` images;
    without ``styles`` ``<style>`` blocks go too (a quote in the compose editor)."""
    blocked = 0
    cids = inline or {}

    def image(value: str) -> str | None:
        nonlocal blocked
        url = value.strip()
        if url[:4].lower() == "cid:":
            return cids.get(unquote(url[4:]).strip("<> "))
        if _DATA_IMAGE.match(url):
            return url
        if not _REMOTE.match(url) or is_own_pixel(url) or is_own_pixel(unquote(url)):
            return None
        if not images:
            blocked += 1
            return None
        return url

    def attribute(tag: str, name: str, value: str) -> str | None:
        if name == "style":
            return defuse_css(value)
        if tag == "a" and name == "href":
            return value if _LINK.match(value.strip()) else None
        if tag == "img" and name == "src":
            return image(value)
        return value

    tags = _TAGS if styles else _TAGS - {"style"}
    out = nh3.clean(
        html, tags=tags, clean_content_tags=_DROP_WITH_CONTENT | ({"style"} - tags),
        attributes=_ATTRIBUTES, attribute_filter=attribute, strip_comments=True,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes={"http", "https", "mailto", "tel", "cid", "data"},
    )
    # nh3 serialises <style> bare and its text raw; a parsed style cannot hold "</style".
    out = _STYLE_BLOCK.sub(lambda m: f"<style{m.group(1)}>{defuse_css(m.group(2))}</style>",
                           out)
    return Cleaned(out, blocked)


# -- plain text -> HTML ------------------------------------------------------------------

_URL = re.compile(r"https?://[^\s<>\"'`]+", re.I)
_TRAILING = ".,;:!?'\"*_"


def _trim(url: str) -> str:
    """Leave sentence punctuation and an unbalanced closing bracket out of a link."""
    while url:
        last = url[-1]
        unbalanced = {")": "(", "]": "["}.get(last)
        if last in _TRAILING or (unbalanced and url.count(unbalanced) < url.count(last)):
            url = url[:-1]
        else:
            break
    return url


def linkify(text: str) -> Markup:
    """``text`` escaped, with its http(s) URLs as links that open in a new tab."""
    out: list[str] = []
    pos = 0
    for m in _URL.finditer(text):
        url = _trim(m.group(0))
        if len(url) <= len("https://"):
            continue
        out.append(str(escape(text[pos:m.start()])))
        out.append(f'<a href="{escape(url)}" target="_blank" '
                   f'rel="noopener noreferrer nofollow">{escape(url)}</a>')
        pos = m.start() + len(url)
    out.append(str(escape(text[pos:])))
    return Markup("".join(out))


# -- HTML -> plain text ------------------------------------------------------------------

_BLOCKS = {"p", "div", "section", "article", "header", "footer", "aside", "nav", "main",
           "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "dl", "figure",
           "address", "center", "form", "fieldset", "details", "summary"}
_LINES = {"tr", "dt", "dd", "figcaption", "caption"}
_SKIP = {"script", "style", "head", "title", "template", "noscript", "svg", "math"}
_VOID = {"br", "hr", "img", "wbr", "input", "meta", "link", "col", "area", "base", "source"}


class _TextWriter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.line: list[str] = []
        self.quote = 0
        self.pre = 0
        self.skip = 0
        self.lists: list[list[int]] = []  # per open list: [is_ordered, next number]
        self.links: list[str | None] = []
        self.link_text: list[int] = []

    def _prefix(self) -> str:
        return "> " * self.quote

    def _end_line(self) -> None:
        text = "".join(self.line)
        self.line = []
        self.lines.append((self._prefix() + text).rstrip())

    def _break(self, blank: bool = False) -> None:
        if self.line and "".join(self.line).strip():
            self._end_line()
        self.line = []
        if blank and self.lines:
            if self.lines[-1].strip("> ") != "":
                self.lines.append(self._prefix().rstrip())
            elif len(self.lines[-1]) > len(self._prefix().rstrip()):
                self.lines[-1] = self._prefix().rstrip()  # a quote ended: the gap is outside

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.skip = 0  # a <head> left open ends here
        if tag in _SKIP:
            self.skip += 1
            return
        if self.skip:
            return
        a = dict(attrs)
        if tag == "br":
            self._end_line()
        elif tag == "hr":
            self._break()
            self.lines.append(self._prefix() + "-" * 20)
        elif tag == "blockquote":
            self._break(blank=True)
            self.quote += 1
        elif tag == "pre":
            self._break(blank=True)
            self.pre += 1
        elif tag in ("ul", "ol"):
            self._break(blank=not self.lists)
            self.lists.append([tag == "ol", _start(a.get("start"))])
        elif tag == "li":
            self._break()
            indent = "  " * max(0, len(self.lists) - 1)
            if self.lists and self.lists[-1][0]:
                self.line.append(f"{indent}{self.lists[-1][1]}. ")
                self.lists[-1][1] += 1
            else:
                self.line.append(f"{indent}- ")
        elif tag in _BLOCKS:
            self._break(blank=True)
        elif tag in _LINES:
            self._break()
        elif tag in ("td", "th"):
            if self.line and "".join(self.line).strip():
                self.line.append("  ")
        elif tag == "img":
            alt = (a.get("alt") or "").strip()
            if alt:
                self.line.append(f"[{alt}]")
        elif tag == "a":
            self.links.append(a.get("href"))
            self.link_text.append(len("".join(self.line)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag == "blockquote":
            self._break()
            self.quote = max(0, self.quote - 1)
            self._break(blank=True)
        elif tag == "pre":
            self._break(blank=True)
            self.pre = max(0, self.pre - 1)
        elif tag in ("ul", "ol"):
            if self.lists:
                self.lists.pop()
            self._break(blank=not self.lists)
        elif tag in _BLOCKS:
            self._break(blank=True)
        elif tag in _LINES or tag == "li":
            self._break()
        elif tag == "a" and self.links:
            href = (self.links.pop() or "").strip()
            start = self.link_text.pop()
            text = "".join(self.line)[start:].strip()
            if _REMOTE.match(href) and href not in (text, f"mailto:{text}"):
                self.line.append(f" ({href})")

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            parts = data.split("\n")
            for i, part in enumerate(parts):
                if i:
                    self._end_line()
                self.line.append(part)
            return
        text = re.sub(r"\s+", " ", data)
        so_far = "".join(self.line)
        if not so_far or so_far[-1] == " ":
            text = text.lstrip()
        self.line.append(text)

    def text(self) -> str:
        self._break()
        out: list[str] = []
        for line in self.lines:
            blank = line.strip("> ") == ""
            if blank and (not out or out[-1].strip("> ") == ""):
                continue  # never two blank lines running, none at the start
            out.append(line)
        while out and out[-1].strip("> ") == "":
            out.pop()
        return "\n".join(out) + "\n" if out else ""


def _start(value: str | None) -> int:
    try:
        return int(value or "1")
    except ValueError:
        return 1


def html_to_text(html: str) -> str:
    """A readable plain-text version of ``html``: paragraphs, lists, "> " quotes, and link
    targets in brackets after their text."""
    writer = _TextWriter()
    writer.feed(html)
    writer.close()
    return writer.text()
