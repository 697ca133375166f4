"""URLs read the way a browser reads them (the WHATWG URL Standard, through ada-url).

Python's urllib splits URLs by RFC 3986, which is not what a browser fetches: a browser drops
tabs and newlines anywhere, takes backslashes for slashes in http(s) URLs, resolves "." and
"%2e" segments, and reads hosts such as ``0x7f.1``. Deciding what an image fetches by
anything else lets a disguised URL through.
"""

from __future__ import annotations

from dataclasses import dataclass

from ada_url import URL

__all__ = ["BrowserUrl", "browser_url"]


@dataclass(frozen=True)
class BrowserUrl:
    href: str
    scheme: str  # lowercase, without ":"
    hostname: str  # lowercase, punycode, IPv4 in dotted decimal
    port: str  # "" for the scheme's default
    pathname: str  # dot segments resolved, still percent-encoded
    fragment: str  # after "#", still percent-encoded


def browser_url(url: str, base: str | None = None) -> BrowserUrl | None:
    """``url`` (relative to ``base``) as a browser would fetch it; None where a browser
    would fetch nothing."""
    try:
        parsed = URL(url, base) if base is not None else URL(url)
    except ValueError:
        return None
    return BrowserUrl(parsed.href, parsed.protocol.rstrip(":"), parsed.hostname, parsed.port,
                      parsed.pathname, parsed.hash[1:])
