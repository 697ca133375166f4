"""Which URLs are ours: read as a browser fetches them, so no disguise of our /t/ path gets a
quoted pixel past the stripping at ingest, the tagger or the web view."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailseen.clock import SYSTEM
from mailseen.core import urls
from mailseen.core.pixel import OwnUrl, own_url
from mailseen.core.tokens import TokenRef, TokenSigner
from mailseen.core.urls import browser_url
from mailseen.services.mailboxes import Mailboxes
from mailseen.services.reminders import Reminders
from mailseen.services.sending import Sender
from mailseen.storage import Store

SIGNER = TokenSigner(b"test-secret-key-0123456789abcdef")
OTHER_KEY = TokenSigner(b"another-nodes-key-0123456789abcd")
TOKEN = SIGNER.make(TokenRef(7))
BASE = "https://track.example"
# Only is_own_pixel is used, which needs no store.
SENDER = Sender(cast(Store, None), cast(Mailboxes, None), SIGNER, BASE,
                reminders=Reminders(cast(Store, None), SYSTEM))


@pytest.mark.parametrize("url", [
    f"https://track.example/t/{TOKEN}.gif",
    f"https://track.example/t/./{TOKEN}.gif",
    f"https://track.example/x/../t/{TOKEN}.gif",
    f"https://track.example/t/%2e/{TOKEN}.gif",
    f"https://track.example\\t\\{TOKEN}.gif",
    f"https:\\\\track.example\\t\\{TOKEN}.gif",
    f"https://track.example/t/{TOKEN[:5]}\t{TOKEN[5:]}.gif",
    f"https://track.ex\nample/t/{TOKEN}.gif",
    f" https://TRACK.example:443/t/{TOKEN}.gif ",
    f"https://track.example/%74/{TOKEN}.gif",
    f"https://track.example/t%2F{TOKEN}.gif",
    f"https://track.example//t//{TOKEN}.gif",
    f"https:/track.example/t/{TOKEN}.gif",
    f"https://user@track.example/t/{TOKEN}.gif?x=1#y",
    f"/t/{TOKEN}.gif",  # relative: the frame would resolve it against our own address
    f"https://ci3.googleusercontent.com/proxy/abc=s0-d-e1-ft#https://track.example/t/{TOKEN}.gif",
])
def test_disguised_forms_of_our_pixel_are_ours(url: str) -> None:
    assert SENDER.is_own_pixel(url)


@pytest.mark.parametrize("url", [
    f"https://track.example/t/{OTHER_KEY.make(TokenRef(7))}.gif",  # another node's key
    "https://track.example/t/not-a-token.gif",  # an older key's, or a truncated one
    "https://track.example/c/anything",  # our click path
    "https://TRACK.EXAMPLE/T/x.gif",
])
def test_anything_under_our_public_t_and_c_paths_is_ours_whatever_the_token(url: str) -> None:
    assert SENDER.is_own_pixel(url)


@pytest.mark.parametrize("url", [
    f"https://old-name.example/t/{TOKEN}.gif",  # the public URL changed since
    f"https://0x7f.1/t/{TOKEN}.gif",
    f"http://old-name.example/mailseen/t/./{TOKEN}.gif",
])
def test_a_genuine_token_is_ours_on_any_host(url: str) -> None:
    assert SENDER.is_own_pixel(url)


@pytest.mark.parametrize("url", [
    "https://cdn.example/t/banner.gif",  # someone else's /t/, no token of ours
    f"https://cdn.example/t/{OTHER_KEY.make(TokenRef(7))}.gif",
    "https://track.example/static/logo.png",
    "https://track.example.evil.example/t/x.gif",
    "https://track.example:8443/t/x.gif",  # another service on another port
    f"mailto:x@track.example?t/{TOKEN}.gif",
    "not a url at all",
])
def test_other_urls_are_not_ours(url: str) -> None:
    assert not SENDER.is_own_pixel(url)


def test_the_token_is_read_from_the_path() -> None:
    found = own_url(f"https://track.example/t/./{TOKEN}.gif", BASE, lambda t: False)
    assert found == OwnUrl("t", TOKEN)


def test_a_base_url_with_a_path_is_followed() -> None:
    def never(token: str) -> bool:
        return False

    base = "https://example.org/mailseen/"
    assert own_url("https://example.org/mailseen/./t/x.gif", base, never) == OwnUrl("t", "x")
    assert own_url("https://example.org/blog/t/x.gif", base, never) is None


def test_browser_url_reads_as_browsers_do() -> None:
    url = browser_url("HTTP://Ex\tample.org\\a\\..\\b/%2e/c.gif")
    assert url is not None
    assert (url.scheme, url.hostname, url.pathname) == ("http", "example.org", "/b/c.gif")
    assert browser_url("http://[broken") is None


_PIECES = ["http", "https", "HTTPS", "://", ":", "/", "//", ".", "..", "%2e", "%2E", "%41", "?",
           "#", "a", "Z", "0", "9", "-", "xn--", "0x7f", "t", "x.gif", "@", "\\", "\t", " ",
           "^", "|", "~", "'", '"', "<", "{", "é", "&", ";", "=", "[", "]", "80", "443"]


@given(st.lists(st.sampled_from(_PIECES), max_size=14))
def test_the_fast_path_reads_urls_as_the_parser_does(pieces: list[str]) -> None:
    for url in ("".join(pieces), "https://" + "".join(pieces), "http://a.example/" +
                "".join(pieces)):
        assert browser_url(url) == urls._parse(url, None), url
