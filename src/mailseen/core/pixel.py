"""The tracking image itself, the tag that embeds it, and which URLs are ours."""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal
from urllib.parse import unquote, urlsplit

from .urls import browser_url

__all__ = ["GIF", "OwnUrl", "click_url", "own_url", "pixel_tag", "pixel_url", "refusal_url"]

# The classic 43-byte 1x1 transparent GIF89a.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
assert len(GIF) == 43

_OWN_KINDS = ("t", "c")  # /t/<token>.gif: the pixel; /c/<token>: a click redirect
_FRAGMENT_DEPTH = 2  # an image proxy's URL names the original after "#" (Gmail's does)


@dataclass(frozen=True)
class OwnUrl:
    kind: Literal["t", "c"]
    token: str  # what the path holds where a token goes (checked only off our host)


def own_url(url: str, base_url: str, genuine: Callable[[str], bool]) -> OwnUrl | None:
    """The one answer to "does fetching ``url`` reach one of our /t/ or /c/ paths?".

    ``url`` is read as a browser reads it (WHATWG URL parsing: tabs and newlines dropped,
    backslashes as slashes, dot segments, ``%2e``, IPv4 in hex, relative to ``base_url``)
    and its path then percent-decoded and normalised as a server or proxy in front of us
    may do. Ours is anything under ``base_url``'s /t/ or /c/ on its host, whatever the
    token (an older key, another node's), and, on any other host (the public URL may have
    changed since), a /t/ or /c/ segment followed by a token ``genuine`` accepts. An image
    proxy's URL that names one of ours after "#" is ours too: the proxy fetches it.
    """
    return _own(url, base_url, genuine, _FRAGMENT_DEPTH)


def _own(url: str, base_url: str, genuine: Callable[[str], bool], depth: int
         ) -> OwnUrl | None:
    base_host, base_port, prefix = _base(base_url)
    parsed = browser_url(url, base_url if base_host is not None else None)
    if parsed is None or parsed.scheme not in ("http", "https"):
        return None
    segments = _segments(parsed.pathname)
    if (parsed.hostname, parsed.port) == (base_host, base_port):
        # Under the base path, or at the root where a proxy passes everything through.
        starts = (len(prefix), 0) if tuple(s.lower() for s in segments[: len(prefix)]) \
            == prefix else (0,)
        for at in starts:
            if len(segments) > at and segments[at].lower() in _OWN_KINDS:
                return _own_url(segments[at], segments[at + 1] if len(segments) > at + 1 else "")
    for i, segment in enumerate(segments[:-1]):
        if segment.lower() in _OWN_KINDS:
            token = _token(segments[i + 1])
            if genuine(token):
                return _own_url(segment, token)
    fragment = unquote(parsed.fragment).strip()
    if depth > 1 and fragment[:4].lower() == "http":
        return _own(fragment, base_url, genuine, depth - 1)
    return None


def _own_url(kind: str, segment: str) -> OwnUrl:
    return OwnUrl("t" if kind.lower() == "t" else "c", _token(segment))


def _token(segment: str) -> str:
    return segment[:-4] if segment[-4:].lower() == ".gif" else segment


def _segments(pathname: str) -> list[str]:
    """The path as the server may end up seeing it: percent-decoded (an ASGI server does),
    then with empty and dot segments resolved (a proxy in front may merge slashes), a
    decoded backslash taken as a slash."""
    out: list[str] = []
    for segment in unquote(pathname, errors="replace").replace("\\", "/").split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return out


@lru_cache(maxsize=8)
def _base(base_url: str) -> tuple[str | None, str, tuple[str, ...]]:
    """(host, port, lowercased path segments) of the public base URL; no host when it is
    not a URL (then only genuine tokens are ours)."""
    parsed = browser_url(base_url)
    if parsed is None:
        return None, "", ()
    return parsed.hostname, parsed.port, tuple(s.lower() for s in _segments(parsed.pathname))


def pixel_url(base_url: str, token: str) -> str:
    """The absolute URL of ``token``'s image; a relative one would not load in a mail
    client, so anything but an absolute http(s) base URL is refused."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the public base URL must be absolute http(s), not {base_url!r}")
    return f"{base_url.rstrip('/')}/t/{token}.gif"


def click_url(base_url: str, token: str) -> str:
    """Where a tracked link leads: our redirect, which records the click and goes on to the
    URL signed in ``token``."""
    return f"{base_url.rstrip('/')}/c/{token}"


def refusal_url(base_url: str, token: str) -> str:
    """Where the recipient of the copy ``token`` names can refuse tracking (the link of
    the refusal line)."""
    return f"{base_url.rstrip('/')}/r/{token}"


def pixel_tag(url: str) -> str:
    """The ``<img>`` we add: 1x1, no border, no alt text, styled to take no room.

    Attributes and inline styles both, because some clients drop one or the other
    (Outlook ignores most CSS; Gmail drops some attributes). Where CSS applies the image is
    a zero-size float: it adds no line box, and, being out of the flow, it does not stop the
    last element's bottom margin from collapsing with the body's (a zero-height block in
    the flow does, which made some layouts 8 px taller). Clients still fetch it.
    """
    return (
        f'<img src="{html.escape(url, quote=True)}" width="1" height="1" alt="" border="0" '
        'style="display:block;float:left;width:0;height:0;max-width:0;max-height:0;border:0;'
        'margin:0;padding:0;overflow:hidden" />'
    )
