"""Find where a pixel goes in an email's HTML without parsing and re-serialising it.

A plain ``rfind("</body>")`` is wrong for mail: a ``</body>`` can sit in a comment, an Outlook
conditional block (``<!--[if mso]>…<![endif]-->`` or the downlevel-revealed ``<![if …]>…
<![endif]>``), a script/style/textarea/title, or an attribute value. This scanner walks the
markup the way an HTML tokenizer does, just enough to tell those apart, and reports offsets into
the string it was given so the caller can splice.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Scan", "scan_html", "splice_pixel"]

# Elements whose content is raw text: nothing inside is a tag (HTML Living Standard, 13.1.2).
_RAW_TEXT = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed",
                       "noframes", "plaintext"})

_MARKUP = re.compile(
    r"""
      (?P<comment><!--.*?(?:-->|\Z))
    | (?P<cond><!\[if[^\]]*\]>.*?(?:<!\[endif\]>|\Z))
    | (?P<decl><![^>]*(?:>|\Z))
    | (?P<pi><\?[^>]*(?:>|\Z))
    | </(?P<close>[A-Za-z][^\s/>]*)(?:[^>"']|"[^"]*"|'[^']*')*(?:>|\Z)
    | <(?P<open>[A-Za-z][^\s/>]*)(?P<attrs>(?:[^>"']|"[^"]*"|'[^']*')*)(?:>|\Z)
    """,
    re.S | re.X | re.I,
)
_SRC = re.compile(r"""(?:^|[\s/])src\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.I)


@dataclass
class Scan:
    body_close: int | None = None  # offset of the last real "</body"
    html_close: int | None = None  # offset of the last real "</html"
    own_pixels: list[tuple[int, int]] = field(default_factory=list)  # spans of our old <img>s


def scan_html(html: str, is_own_pixel: Callable[[str], bool]) -> Scan:
    """Tokenize just enough of ``html`` to find the real closing tags and our own pixels."""
    scan = Scan()
    pos = 0
    search = _MARKUP.search
    while True:
        m = search(html, pos)
        if m is None:
            return scan
        pos = m.end()
        close = m.group("close")
        if close is not None:
            name = close.lower()
            if name == "body":
                scan.body_close = m.start()
            elif name == "html":
                scan.html_close = m.start()
            continue
        name = m.group("open")
        if name is None:
            continue
        name = name.lower()
        if name == "img":
            src = _SRC.search(m.group("attrs"))
            if src is not None:
                url = next(g for g in src.groups() if g is not None)
                if is_own_pixel(url.replace("&amp;", "&")):
                    scan.own_pixels.append((m.start(), m.end()))
        elif name in _RAW_TEXT:
            if name == "plaintext":
                return scan
            end = re.compile(r"</" + name + r"[\s/>]", re.I).search(html, pos)
            if end is None:
                return scan
            pos = end.start()


def splice_pixel(html: str, tag: str, is_own_pixel: Callable[[str], bool],
                 max_line: int | None = None) -> tuple[str, int]:
    """Return ``html`` with our earlier pixels removed and ``tag`` before the last real
    ``</body>`` (else ``</html>``, else at the end), and how many earlier pixels went.

    With ``max_line`` the tag is put on a line of its own when inserting it inline would make
    its line longer than that, so 7bit/8bit parts keep within SMTP's 998-octet limit.
    """
    scan = scan_html(html, is_own_pixel)
    at = scan.body_close if scan.body_close is not None else scan.html_close
    if at is None:
        at = len(html)
    parts: list[str] = []
    last = 0
    removed_before_at = 0
    for start, end in scan.own_pixels:
        parts.append(html[last:start])
        if end <= at:
            removed_before_at += end - start
        last = end
    parts.append(html[last:])
    cleaned = "".join(parts)
    at -= removed_before_at
    insert = tag
    if max_line is not None:
        line_start = cleaned.rfind("\n", 0, at) + 1
        line_end = cleaned.find("\n", at)
        if line_end == -1:
            line_end = len(cleaned)
        if line_end - line_start + len(tag) > max_line:
            eol = "\r\n" if "\r\n" in cleaned else "\n"
            insert = eol + tag + eol
    return cleaned[:at] + insert + cleaned[at:], len(scan.own_pixels)
