"""Where the pixel goes in HTML: before the last *real* </body>, found without re-serialising."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailseen.core import htmlscan
from mailseen.core.htmlscan import scan_html, splice_pixel
from mailseen.core.pixel import own_url
from mailseen.core.tokens import TokenRef, TokenSigner

SIGNER = TokenSigner(b"test-secret-key-0123456789abcdef")
OLD_TOKEN = SIGNER.make(TokenRef(41))
OLD_PIXEL = f'<img src="https://old.example/t/{OLD_TOKEN}.gif" width="1" height="1" alt="">'
TAG = '<img src="https://track.example/t/NEW.gif" width="1" height="1" alt="">'
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "newsletters"


def is_own_pixel(url: str) -> bool:
    """As ``Sender.is_own_pixel``."""
    return own_url(url, "https://track.example",
                   lambda t: SIGNER.check(t) is not None) is not None


def never_own(url: str) -> bool:
    return False


def spliced(marked: str, own: bool = True) -> tuple[str, str]:
    """``marked`` shows with ``@@`` where the pixel must land; return (input, expected)."""
    assert marked.count("@@") == 1
    return splice_pixel(marked.replace("@@", ""), TAG, is_own_pixel if own else never_own)[0], \
        marked.replace("@@", TAG)


@pytest.mark.parametrize("marked", [
    pytest.param("<html><body><p>Hi</p>@@</body></html>", id="plain"),
    pytest.param("<html><body>x@@</body></html>\n<!-- </body> -->\n", id="trailing-comment"),
    pytest.param("<html><body>x@@</body>\n<!--[if mso]></body><![endif]-->\n</html>",
                 id="mso-conditional-comment"),
    pytest.param("<html><body>x@@</body>\n<![if !mso]></body><![endif]>\n</html>",
                 id="downlevel-revealed-conditional"),
    pytest.param("<html><body>x@@</body>\n<![IF !MSO]><p></BODY></p><![ENDIF]></html>",
                 id="downlevel-revealed-uppercase"),
    pytest.param("<body>x@@</body><script>var s = '</body>';</script></html>",
                 id="script-string"),
    pytest.param('<body>x@@</body><script type="text/javascript">\n'
                 'document.write("<\\/script></body>")</script>', id="script-escaped-end"),
    pytest.param("<body>x@@</body><style>/* </body> */ p { color: red }</style>",
                 id="style"),
    pytest.param("<body>x@@</body><textarea></body></textarea>", id="textarea"),
    pytest.param("<html><head><title>a </body> b</title></head>x@@</html>",
                 id="title-then-no-body"),
    pytest.param("<body>x@@</body><noframes></body></noframes><xmp></body></xmp>",
                 id="noframes-and-xmp"),
    pytest.param('<body><p>x</p>@@</body><a title="</body>">y</a>', id="attribute-dq"),
    pytest.param("<body><p>x</p>@@</body><a title='</body>'>y</a>", id="attribute-sq"),
    pytest.param("<body><p>x</p>@@</body><a title=</body>>y</a>", id="attribute-unquoted"),
    pytest.param("<html><body><p class=it's>x</p>@@</body><p title='y'></p></html>",
                 id="apostrophe-in-unquoted-value"),
    pytest.param("<html><body><b class=it's>x</b>@@</body><i title='y'>'</i></html>",
                 id="apostrophe-in-unquoted-value-even-quotes"),
    pytest.param('<html><body><p data-x=a"b>x</p>@@</body><p title="y">"</p></html>',
                 id="quote-in-unquoted-value"),
    pytest.param("<html><body><b it's>x</b>@@</body><i title='y'>'</i></html>",
                 id="apostrophe-in-attribute-name"),
    pytest.param("<html><body>x@@</BODY >\n</HTML>", id="uppercase-with-space"),
    pytest.param("<html><body>x@@</Body\n  foo='>'></html>", id="end-tag-with-attribute"),
    pytest.param("<html><body>x</body>y@@</body></html>", id="two-real-ends-last-wins"),
    pytest.param("<html><p>no body</p>@@</html>\n", id="no-body-but-html"),
    pytest.param("<p>fragment</p>\n@@", id="neither"),
    pytest.param("@@", id="empty"),
    pytest.param("<html><body>x@@</body><![CDATA[ </body> ]]></html>", id="cdata-bogus"),
    pytest.param("<html><body>x@@</body><? </body> ?></html>", id="processing-instruction"),
    pytest.param("<html><body>x@@</body></ </body></html>", id="bogus-end-tag"),
    pytest.param("<html><body>x<!-->y@@</body></html>", id="abrupt-empty-comment"),
    pytest.param("<html><body>x<!--->y@@</body></html>", id="abrupt-dash-comment"),
    pytest.param("<html><body>x<!-- a --!>y@@</body></html>", id="comment-closed-by-bang"),
    pytest.param("<html><body>x<!--[if !mso]><!-->y<!--<![endif]-->@@</body></html>",
                 id="downlevel-revealed-valid-form"),
    pytest.param("<html><body>x@@</body><plaintext></body></html>", id="plaintext"),
    pytest.param("<html><body><style>p{}</style>x@@</body></html>", id="style-before-end"),
    pytest.param("<html><body>x<bodyx></bodyx>@@</body></html>", id="similar-tag-name"),
    pytest.param("<html><body>unclosed <style> p {} </body></html>@@",
                 id="unclosed-style-hides-the-rest"),
    pytest.param("<html><body>a<!-- unclosed comment </body></html>@@",
                 id="unclosed-comment-hides-the-rest"),
])
def test_pixel_goes_before_the_last_real_body_end(marked: str) -> None:
    got, expected = spliced(marked)
    assert got == expected


def test_scan_reports_offsets_into_the_given_string() -> None:
    html = "<html><body>x</body>\n<!-- </body> --></html>"
    scan = scan_html(html, never_own)
    assert scan.body_close == html.index("</body>")
    assert scan.html_close == html.index("</html>")
    assert scan.own_pixels == []


def test_our_old_pixel_in_a_quoted_reply_is_removed() -> None:
    html = (f"<html><body><p>Thanks!</p><blockquote><p>Earlier</p>{OLD_PIXEL}</blockquote>"
            "</body></html>")
    out, removed = splice_pixel(html, TAG, is_own_pixel)
    assert removed == 1
    assert OLD_TOKEN not in out
    assert out == html.replace(OLD_PIXEL, "").replace("</body>", TAG + "</body>")


@pytest.mark.parametrize("old", [
    f"<img src='https://old.example/t/{OLD_TOKEN}.gif'>",
    f"<img src=https://old.example/t/{OLD_TOKEN}.gif>",
    f'<IMG SRC="http://moved.example:8080/base/t/{OLD_TOKEN}.gif" />',
    f'<img\n  width="1"\n  src = "https://old.example/t/{OLD_TOKEN}.gif?x=1&amp;y=2">',
    f'<img alt="quoted > reply" src="https://old.example/t/{OLD_TOKEN}.gif">',
    f'<img src="https://old.example&#47;t&#47;{OLD_TOKEN}.gif">',
])
def test_every_spelling_of_our_old_pixel_is_removed(old: str) -> None:
    html = f"<body><blockquote>{old}</blockquote>x</body>"
    out, removed = splice_pixel(html, TAG, is_own_pixel)
    assert removed == 1
    assert out == f"<body><blockquote></blockquote>x{TAG}</body>"


@pytest.mark.parametrize("old", [
    f"<!--[if mso]>{OLD_PIXEL}<![endif]-->",
    f"<![if !mso]>{OLD_PIXEL}<![endif]>",
])
def test_our_old_pixel_inside_an_outlook_conditional_is_removed(old: str) -> None:
    # Outlook (or everything but Outlook) shows these blocks, so the old pixel would load.
    html = f"<body><blockquote>{old}</blockquote>x</body>"
    out, removed = splice_pixel(html, TAG, is_own_pixel)
    assert removed == 1
    assert out == f"<body><blockquote>{old.replace(OLD_PIXEL, '')}</blockquote>x{TAG}</body>"


@pytest.mark.parametrize("img", [
    '<img src="https://cdn.example/t/x.gif">',  # a foreign image on a /t/ path
    f'<img src="https://old.example/t/{OLD_TOKEN[:-1]}.gif">',  # truncated token
    f'<img src="https://old.example/t/{OLD_TOKEN}.png">',
    f'<img alt="src=https://old.example/t/{OLD_TOKEN}.gif" src="logo.gif">',
    f'<a href="https://old.example/t/{OLD_TOKEN}.gif">link</a>',
    f'<script>var i = \'<img src="https://old.example/t/{OLD_TOKEN}.gif">\';</script>',
])
def test_foreign_images_and_lookalikes_are_kept(img: str) -> None:
    html = f"<body>{img}x</body>"
    out, removed = splice_pixel(html, TAG, is_own_pixel)
    assert removed == 0
    assert out == f"<body>{img}x{TAG}</body>"


OLD_URL = f"https://old.example/t/{OLD_TOKEN}.gif"


@pytest.mark.parametrize(("css", "neutral"), [
    (f"<style>.q {{ background-image: url({OLD_URL}) }}</style>",
     "<style>.q { background-image: none }</style>"),
    (f'<style class="x">.q{{background:url("{OLD_URL}") no-repeat}}</style>',
     '<style class="x">.q{background:url("") no-repeat}</style>'),
    (f"<style>.q {{ background: \\75 rl({OLD_URL}) }}</style>",
     "<style>.q { background: none }</style>"),
    (f"<style>@import '{OLD_URL}';\r\n.a{{}}</style>", "<style>@import \"\";\r\n.a{}</style>"),
    ("<style>.q { background: url(https://track.example/t/./x.gif) }</style>",
     "<style>.q { background: none }</style>"),
    (f'<p style="background-image: url({OLD_URL})">x</p>',
     '<p style="background-image: none">x</p>'),
    (f"<p style='background:url(&quot;{OLD_URL}&quot;)'>x</p>",
     '<p style="background:url(&quot;&quot;)">x</p>'),
    (f'<p style="background:&#117;rl({OLD_URL})">x</p>', '<p style="background:none">x</p>'),
    (f'<p style="background: \\75 rl(\'{OLD_URL}\')">x</p>',
     '<p style="background: \\75 rl(&quot;&quot;)">x</p>'),
], ids=["style", "style-with-attributes", "css-escape", "import", "dot-segment", "attribute",
        "attribute-quoted-url", "character-reference", "attribute-css-escape"])
def test_our_old_pixel_as_a_css_image_is_neutralised(css: str, neutral: str) -> None:
    html = f"<html><head>{css}</head><body><p>a</p></body></html>" if "<style" in css else \
        f"<html><body>{css}</body></html>"
    out, removed = splice_pixel(html, TAG, is_own_pixel)
    assert removed == 1
    assert out == html.replace(css, neutral).replace("</body>", f"{TAG}</body>")


def test_foreign_css_images_keep_their_bytes() -> None:
    html = ('<html><head><style>.a{background:url(https://cdn.example/t/x.gif)} '
            '.b{content:"\\201C"}</style></head><body><p style="background:url('
            '&quot;https://cdn.example/a.png&quot;)">a</p></body></html>')
    assert splice_pixel(html, TAG, is_own_pixel) == (
        html.replace("</body>", f"{TAG}</body>"), 0)


def test_old_pixel_after_the_body_end_is_removed_and_the_offset_still_right() -> None:
    html = f"<body>x</body>{OLD_PIXEL}</html>"
    out, removed = splice_pixel(html, TAG, is_own_pixel)
    assert (out, removed) == (f"<body>x{TAG}</body></html>", 1)


def test_several_old_pixels_before_and_after_the_insertion_point() -> None:
    html = f"<body>{OLD_PIXEL}a{OLD_PIXEL}b</body>{OLD_PIXEL}"
    out, removed = splice_pixel(html, TAG, is_own_pixel)
    assert (out, removed) == (f"<body>ab{TAG}</body>", 3)


def test_empty_tag_only_removes_old_pixels() -> None:
    html = f"<body>{OLD_PIXEL}a</body>"
    assert splice_pixel(html, "", is_own_pixel) == ("<body>a</body>", 1)
    long_line = "<body>" + "x" * 2000 + "</body>"
    assert splice_pixel(long_line, "", is_own_pixel, max_line=998) == (long_line, 0)


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_long_line_gets_the_tag_on_a_line_of_its_own(eol: str) -> None:
    html = f"<html>{eol}<body>" + "x" * 980 + f"</body>{eol}</html>{eol}"
    out, _ = splice_pixel(html, TAG, never_own, max_line=998)
    assert out.replace(eol + TAG + eol, "") == html
    assert all(len(line.encode()) <= 998 for line in out.split(eol))


def test_short_line_keeps_the_tag_inline() -> None:
    html = "<body>\n<p>x</p></body>\n"
    out, _ = splice_pixel(html, TAG, never_own, max_line=998)
    assert out == f"<body>\n<p>x</p>{TAG}</body>\n"


# Pieces that stress the tokenizer: hiding constructs, quotes, raw text, our old pixel.
PIECES = [
    "<html>", "</html>", "<body>", "</body>", "</BODY >", "<p>", "</p>", "text", " ", "\n",
    "\r\n", "<", ">", "'", '"', "=", "/", "-", "!", "<!--", "-->", "--!>", "<!-->",
    "<!--[if mso]>", "<![endif]-->", "<![if !mso]>", "<![endif]>", "<script>", "</script>",
    "<style>", "</style>", "<title>", "</title>", "<textarea>", "</textarea>", '<a title="',
    "<a title='", "<a title=", '">', "'>", "<![CDATA[", "]]>", "<?", "?>", "</ ", "é", "\u2603",
    OLD_PIXEL, '<img src="https://cdn.example/t/x.gif">', "<img src=", "<plaintext>",
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30))
def test_random_markup_changes_nothing_but_the_pixel(pieces: list[str]) -> None:
    html = "".join(pieces)
    out, removed = splice_pixel(html, TAG, is_own_pixel)
    assert out.count(TAG) == 1
    at = out.index(TAG)
    rest = out[:at] + out[at + len(TAG) :]
    # Exactly the reported old pixels went, each a whole <img> tag naming our token.
    spans = scan_html(html, is_own_pixel).own_pixels
    assert removed == len(spans)
    for start, end in spans:
        assert html[start:end].lower().startswith("<img") and OLD_TOKEN in html[start:end]
    kept = "".join(html[a:b] for a, b in zip([0] + [e for _, e in spans],
                                            [s for s, _ in spans] + [len(html)], strict=True))
    assert rest == kept
    # The pixel sits at a closing body or html tag or at the very end.
    after = out[at + len(TAG) :].lower()
    assert after.startswith(("</body", "</html")) or after == ""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<p>", "</p>", "text", "\n", "<body>", "</body>", "</BODY >",
                                 "<html>", "</html>", "<br/>", "<b>", "</b>", OLD_PIXEL]),
                max_size=30))
def test_without_hiding_constructs_the_last_body_end_wins(pieces: list[str]) -> None:
    html = "".join(pieces)
    out, removed = splice_pixel(html, TAG, is_own_pixel)
    cleaned = html.replace(OLD_PIXEL, "")
    assert removed == html.count(OLD_PIXEL)
    ends = [m.start() for m in re.finditer("(?i)</body", cleaned)]
    html_ends = [m.start() for m in re.finditer("(?i)</html", cleaned)]
    at = ends[-1] if ends else html_ends[-1] if html_ends else len(cleaned)
    assert out == cleaned[:at] + TAG + cleaned[at:]


def test_old_pixel_ending_a_conditional_comment_goes_whole() -> None:
    bare = f'<img src="https://old.example/t/{OLD_TOKEN}.gif">'
    html = f"<body><!--[if mso]>{bare}--> x</body>"
    out, removed = splice_pixel(html, TAG, is_own_pixel)
    assert (out, removed) == (f"<body><!--[if mso]>--> x{TAG}</body>", 1)


# The scanner as it was before it learnt to skip the markup it has nothing to do with in one
# regex match: a token-by-token walk, with the HTML tokenizer's rules spelt plainly (lazy
# matches for comments). The reference it must agree with; only the reading of src is shared.
_WS = r"[\t\n\f\r ]"
_ATTRS = (rf"(?:[\t\n\f\r /]+|[^\t\n\f\r />][^\t\n\f\r />=]*"
          rf"(?:{_WS}*={_WS}*(?:\"[^\"]*(?:\"|\Z)|'[^']*(?:'|\Z)|[^\t\n\f\r >]*))?)*")
_TOKEN_SOURCE = rf"""
      (?P<comment><!--(?:-?>|.*?(?:--!?>|\Z)))
    | (?P<cond><!\[if[^\]>]*\]>)(?P<condbody>.*?)(?:<!\[endif\]{_WS}*>|\Z)
    | <![^>]*(?:>|\Z)
    | <\?[^>]*(?:>|\Z)
    | </(?P<close>[A-Za-z][^\t\n\f\r />]*){_ATTRS}(?:>|\Z)
    | </(?![A-Za-z>])[^>]*(?:>|\Z)
    | <(?P<open>[A-Za-z][^\t\n\f\r />]*)(?P<attrs>{_ATTRS})(?:>|\Z)
    """
_TOKEN = re.compile(_TOKEN_SOURCE, re.S | re.X | re.I)
_TOKEN_INNER = re.compile(r"(?P<nested><!--\[if[^\]>]*\]>|<!\[if[^\]>]*\]>)|" + _TOKEN_SOURCE,
                          re.S | re.X | re.I)
_RAW_TEXT = ("script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes",
             "plaintext")


def walk_tokens(html: str) -> tuple[int | None, int | None, list[tuple[int, int]]]:
    found: dict[str, int] = {}
    pixels: list[tuple[int, int]] = []

    def walk(pos: int, endpos: int, closes: bool) -> None:
        search = (_TOKEN if closes else _TOKEN_INNER).search
        while (m := search(html, pos, endpos)) is not None:
            pos = m.end()
            if not closes and m.group("nested"):
                continue
            comment, close = m.group("comment"), m.group("close")
            if comment is not None:
                cond = re.match(r"(?i)<!--\[if[^\]]*\]>", comment)
                if cond:
                    closer = 4 if comment.endswith("--!>") else 3 if comment.endswith("-->") \
                        else 0
                    walk(m.start() + cond.end(), m.end() - closer, False)
            elif m.group("cond") is not None:
                walk(m.start("condbody"), m.end("condbody"), False)
            elif close is not None:
                if closes and close.lower() in ("body", "html"):
                    found[close.lower()] = m.start()
            elif (m.group("open") or "").lower() == "img":
                src = htmlscan._src(m.group("attrs"))
                if src is not None and is_own_pixel(src):
                    pixels.append((m.start(), m.end()))
            elif (m.group("open") or "").lower() in _RAW_TEXT:
                name = m.group("open").lower()
                end = re.compile(rf"(?i)</{name}[\t\n\f\r />]").search(html, pos, endpos)
                if name == "plaintext" or end is None:
                    return
                pos = end.start()

    walk(0, len(html), True)
    return found.get("body"), found.get("html"), pixels


# Spellings near the edges of what the scanner skips in one match.
SKIP_EDGES = [
    "<img", "<IMG SRC=x>", "<imgx>", "<img/", "<bodyx>", "</bodyx>", "</body", "</HTML",
    "</htmlx >", "<stylex>", "<Style>", "</>", "<3", "< p>", "<!>", "<!---->", "<!--x-->",
    "<!DOCTYPE html>", "<!--[IF mso]>", "<!--[if a>b]>", "<![if a>b]>", "<![ENDIF]>",
    "<!-- [if x]>", "<!--[if", "<![if", "<!-", "</ x>", "</1>", "a=b", "'", '"',
    f"<!--[if mso]>{OLD_PIXEL}</body><![endif]-->", f"<![if !mso]>{OLD_PIXEL}</body><![endif]>",
    f"<!--[if !mso]><!-->{OLD_PIXEL}<!--<![endif]-->", f"<p title='{OLD_PIXEL}</body>'>",
    "--", "->", "--!>", "<![ENDIF ]>", "<![endif]\n>", "-", "!", "<![if x]>y<![endif]\t>",
    "<![IF x]></body><![ENDIF ]>",
]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(PIECES + SKIP_EDGES), max_size=40))
def test_skipping_in_one_match_finds_what_a_token_walk_finds(pieces: list[str]) -> None:
    html = "".join(pieces)
    scan = scan_html(html, is_own_pixel)
    assert (scan.body_close, scan.html_close, scan.own_pixels) == walk_tokens(html)


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.html")) if CORPUS.is_dir() else [],
                         ids=lambda p: p.stem)
def test_real_newsletters_scan_as_a_token_walk_does(path: Path) -> None:
    html = path.read_bytes().decode("latin-1")
    scan = scan_html(html, is_own_pixel)
    assert (scan.body_close, scan.html_close, scan.own_pixels) == walk_tokens(html)



PATHOLOGICAL = {
    "piled-downlevel-openers": "<![if x]>" * 20000,
    "piled-conditional-comments": "<!--[if x]>" * 20000,
    "piled-mixed-conditionals": "<!--[if x]><![if y]>" * 10000,
    "piled-unfinished-openers": "<![if" * 20000,
    "piled-open-quotes": "<a b='" * 20000,
    "one-huge-tag": "<p " + "a=b " * 50000,
    "lone-angles": "<" * 100000,
    "unfinished-end-tags": "</body" * 20000,
    "unfinished-raw-text-end": "<style>" + "</styl" * 20000,
    "many-tags": "<body>" + "<p class=x>y</p>" * 20000 + "</body>",
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_pathological_markup_gets_exactly_one_pixel(name: str) -> None:
    # That the scan stays linear on these is measured by bench/scan_pathological.py (time
    # ratios at n and 4n), not by a clock here.
    out, _ = splice_pixel(PATHOLOGICAL[name], TAG, is_own_pixel)
    assert out.count(TAG) == 1
