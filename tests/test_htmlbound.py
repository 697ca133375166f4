"""The bound on what the sanitiser parses: deep nesting flattened to MAX_DEPTH as the
sanitiser's own parser sees it, oversized HTML refused, ordinary mail left exactly as it
was. Asserted on the structure that comes out, never on time."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from mailseen.core.htmlbound import (
    MAX_DEPTH,
    MAX_HTML_CHARS,
    TOO_COMPLEX,
    UNCHECKED_TAGS,
    bound_html,
    flatten,
)
from mailseen.web.site.mailhtml import sanitize

CORPUS = Path("/work/shared/corpus/newsletters")
_VOID = {"br", "hr", "img", "wbr", "col", "area", "input", "meta", "link", "source"}


class _Depth(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.depth = self.deepest = self.tags = 0

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.tags += 1
        if tag not in _VOID:
            self.depth += 1
            self.deepest = max(self.deepest, self.depth)

    def handle_endtag(self, tag: str) -> None:
        if tag not in _VOID:
            self.depth -= 1


def depth(html: str) -> int:
    """How deep ``html`` nests. On the sanitiser's output (serialised by html5ever, every
    element closed) this is how deep the sanitiser's parser nested it."""
    parser = _Depth()
    parser.feed(html)
    parser.close()
    return parser.deepest


def _sanitised(html: str) -> str:
    bounded = bound_html(html)
    assert bounded.html is not None
    return sanitize(bounded.html, is_own_pixel=lambda url: False).html


def test_a_mail_of_100000_nested_divs_is_flattened_to_the_depth_bound() -> None:
    html = "<html><body>" + "<div>" * 100_000 + "deep text" + "</div>" * 100_000
    assert len(html) > 1_000_000  # the 1.2 MB mail
    bounded = bound_html(html)
    assert bounded.html is not None and "flattened" in bounded.note
    assert depth(bounded.html) <= MAX_DEPTH
    out = sanitize(bounded.html, is_own_pixel=lambda url: False).html
    assert "deep text" in out
    assert depth(out) <= MAX_DEPTH


# Each of these makes an HTML parser nest (or re-open) more than its tags say when the
# markup is misnested; flattened, the parser's result stays within the bound.
@pytest.mark.parametrize("unit", [
    "<div><table>",  # </div> ignored inside a table, the next <div> foster-parented
    "<p><b id=x{n}>",  # formatting elements re-opened in every new paragraph
    "<font color=#{n}><p>",
    "<a href=#{n}><div>",
    "<table><tr><td>",
    "<table><td>",  # the parser adds a <tbody> and a <tr> to each
    "<li><ul>",
    "<div title='</div>'>",  # an end tag inside an attribute is no end tag
    "<div><!-- </div> -->",
    "<svg><style></svg><div>",
    "<span><style></span></style>",
])
def test_misnested_markup_cannot_nest_past_the_bound(unit: str) -> None:
    html = "".join(unit.replace("{n}", str(i)) for i in range(UNCHECKED_TAGS)) + "end"
    # The elements a parser implies (<tbody>, <tr>) come on top: at most one more each.
    assert depth(_sanitised(html)) <= 2 * MAX_DEPTH


def test_html_over_the_size_bound_is_refused() -> None:
    bounded = bound_html("<p>" + "x" * MAX_HTML_CHARS + "</p>")
    assert bounded.html is None
    assert bounded.note == TOO_COMPLEX


def test_ordinary_mail_is_given_to_the_sanitiser_as_it_is() -> None:
    html = "<table><tr><td><p>Hi <b>there</b></p></td></tr></table>"
    assert bound_html(html).html == html and bound_html(html).note == ""


def test_flattening_reads_markup_as_a_browser_does() -> None:
    flat = flatten('<p title="a<b>c" data-x=\'say "hi"\'>1 < 2 &amp; 3<!-- <div> -->'
                   "<style>p > a { color: red }</style><script>if (a<b) {}</script>"
                   "<textarea><div></textarea><svg><div></div></svg><br/><div/>x").html
    assert flat == ('<p title="a<b>c" data-x="say &quot;hi&quot;">1 &lt; 2 &amp; 3'
                    "<style>p > a { color: red }</style><br><div>x</div></p>")


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the shared test corpus is not here")
def test_flattening_leaves_real_mail_as_the_sanitiser_would_show_it() -> None:
    files = sorted(CORPUS.glob("*.htm*"))
    assert files
    for path in files:
        html = path.read_text(encoding="utf-8", errors="replace")
        plain = sanitize(html, is_own_pixel=lambda url: False).html
        assert sanitize(flatten(html).html, is_own_pixel=lambda url: False).html == plain, path
