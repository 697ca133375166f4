"""The Content-Security-Policy of a message body's frame: nothing runs, and nothing loads but
the message's own images, and remote ones only when asked for, each by its exact URL.

CSP cannot say "any image except these", and ``img-src https:`` would let a quoted pixel
(or a CSS ``url()`` the sanitiser missed) reach our /t/ path and count the team's reading as
the customer's view. So "Show images" lists every image URL left in the sanitised body as a
source of its own (a path that does not end in "/" matches only itself) and nothing else.
A browser ignores a source's path after a redirect (CSP 3, "does url match expression"),
so no source is ever on one of our own hosts: a listed image there could pass a redirect
from an attacker's image on to our /t/.
"""

from __future__ import annotations

import html as htmllib
import re
from collections.abc import Callable, Iterable

from ...core.urls import browser_url

__all__ = ["frame_csp"]

_POLICY = ("default-src 'none'; img-src data: cid:{remote}; style-src 'unsafe-inline'; "
           "form-action 'none'; base-uri 'none'; frame-ancestors 'self'; "
           "sandbox allow-popups allow-popups-to-escape-sandbox")
# The sanitiser's output is serialised markup: double-quoted attribute values, escaped.
_IMG_SRC = re.compile(r"<img\b[^>]*?\ssrc=\"([^\"]*)\"", re.I)
# What may stand in a source expression's path as it is (RFC 3986 pchar without ";" and
# ",", which end a directive or a policy); anything else is percent-encoded, and browsers
# compare paths percent-decoded.
_PATH_UNSAFE = re.compile(r"[^A-Za-z0-9\-._~%!$&'()*+=:@/]")
_HOST = re.compile(r"[a-z0-9.-]+")  # CSP host-char; no IPv6 literals
_MAX_SOURCES = 256


def frame_csp(html: str | None, *, images: bool, is_own: Callable[[str], bool],
              own_hosts: Iterable[str]) -> str:
    """The policy for a frame showing the sanitised ``html``; with ``images``, the remote
    images in it may load, except ours (``is_own``) and anything on ``own_hosts`` (URLs
    whose host is one of ours: the public base URL, the address the app was reached at)."""
    if not images or not html:
        return _POLICY.format(remote="")
    hosts = {_hostname(h) for h in own_hosts} - {None}
    sources: dict[str, None] = {}
    for m in _IMG_SRC.finditer(html):
        src = htmllib.unescape(m.group(1))
        source = _source(src)
        if source is None or is_own(src):
            continue
        if _hostname(src) in hosts:
            continue
        sources[source] = None
        if len(sources) >= _MAX_SOURCES:
            break
    return _POLICY.format(remote="".join(f" {s}" for s in sources))


def _hostname(url: str) -> str | None:
    parsed = browser_url(url)
    return parsed.hostname if parsed is not None else None


def _source(url: str) -> str | None:
    """``url`` as a CSP source expression that matches it alone, or None when it cannot be
    written as one (then it does not load)."""
    parsed = browser_url(url)
    if parsed is None or parsed.scheme not in ("http", "https") \
            or not _HOST.fullmatch(parsed.hostname):
        return None
    port = f":{parsed.port}" if parsed.port else ""
    path = _PATH_UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()),
                            parsed.pathname)
    return f"{parsed.scheme}://{parsed.hostname}{port}{path}"
