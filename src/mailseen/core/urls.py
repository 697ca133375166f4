"""URLs read the way a browser reads them (the WHATWG URL Standard, through ada-url).

Python's urllib splits URLs by RFC 3986, which is not what a browser fetches: a browser drops
tabs and newlines anywhere, takes backslashes for slashes in http(s) URLs, resolves "." and
"%2e" segments, and reads hosts such as ``0x7f.1``. Deciding what an image fetches by
anything else lets a disguised URL through.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ada_url import URL, idna_to_ascii

__all__ = ["BrowserUrl", "ascii_domain", "browser_url", "server_name_problem"]

# The common case, read without the parser (which costs more per call than the rest of the
# check): an absolute http(s) URL of printable ASCII that a browser takes as written but for
# the case of scheme and host. Left to the parser: backslashes, white space and controls,
# characters a browser percent-encodes, dot segments and "%2e", ports, user info, hosts that
# are or may be numbers (an IPv4 address in any spelling) or punycode.
_SIMPLE = re.compile(
    r"(https?)://((?:[a-z0-9-]+\.)*[a-z][a-z0-9-]*\.?)"
    r"(/[!$-~]*?)?(\?[!$-~]*?)?(\#[!-~]*)?\Z", re.I)
_NOT_SIMPLE = re.compile(r"""[^!-~]|[\\"'<>`{}^|]|/\.|%2e|(?:^|[/.])xn--""", re.I)


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
    m = _SIMPLE.match(url)
    if m is not None and _NOT_SIMPLE.search(url) is None:
        scheme, host = m.group(1).lower(), m.group(2).lower()
        path, query, fragment = m.group(3) or "/", m.group(4) or "", m.group(5) or ""
        return BrowserUrl(f"{scheme}://{host}{path}{query}{fragment}", scheme, host, "", path,
                          fragment[1:])
    return _parse(url, base)


def _parse(url: str, base: str | None) -> BrowserUrl | None:
    try:
        parsed = URL(url, base) if base is not None else URL(url)
    except ValueError:
        return None
    return BrowserUrl(parsed.href, parsed.protocol.rstrip(":"), parsed.hostname, parsed.port,
                      parsed.pathname, parsed.hash[1:])


_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def server_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a server to connect to (an SMTP relay, an IMAP server), or
    None: an IP address (IPv6 with or without brackets), or a DNS name whose labels are
    letters, digits, hyphens (and underscores), international names in their IDNA form."""
    value = name.strip().removeprefix("[").removesuffix("]")
    if not value:
        return "empty"
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    ascii_name = ascii_domain(value.rstrip("."))
    if ascii_name is None or len(ascii_name) > 253 or not all(
            _LABEL.fullmatch(p) for p in ascii_name.split(".")):
        return f"{name!r} is not a valid server name"
    return None


def ascii_domain(name: str) -> str | None:
    """``name`` as DNS carries it: lowercase, each non-ASCII label in punycode, mapped the
    way a browser maps a host (UTS 46: full-width letters, compatibility forms), so that
    "Bücher.FR" and "xn--bcher-kva.fr" are one name. None for a name no mapping accepts.
    A trailing dot is kept; the caller decides what it means."""
    if name.isascii():
        return name.lower()
    try:
        mapped = idna_to_ascii(name)
    except UnicodeError:  # lone surrogates: not text a mail header can carry
        return None
    return mapped.decode("ascii") or None
