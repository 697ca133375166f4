"""Data minimisation of pixel views: what is kept of a client once its hit has been judged.

Hits are judged on the full address and user agent (network ranges and client strings need
both); what is then written is cut down to the level set (GDPR Art. 5(1)(c) and 25: no more
than the purpose needs, by default):

- IP ``truncated``: the network only, host bits zeroed (IPv4 /24, IPv6 /48, as commonly
  done for analytics: 203.0.113.77 → 203.0.113.0, 2001:db8:1:2::5 → 2001:db8:1::);
  ``none``: no address.
- user agent ``family``: the client the judge named, without version numbers
  ("Outlook 16 on Windows" → "Outlook on Windows").
- The request headers kept with a view lose what names the client or its network: ``Via``
  (proxy names and addresses on the client's way), ``From`` (an address) and ``Referer``
  beyond its origin (a webmail URL may name the mailbox or the message).

Every view stored at less than full detail carries :data:`DETAILS_HEADER` saying so: it can
no longer be judged again on what was seen (``mailseen reclassify`` keeps its verdict)."""

from __future__ import annotations

import functools
import ipaddress
import re
from urllib.parse import urlsplit

from ..records import ViewDetails

__all__ = ["DETAILS_HEADER", "PURGED", "client_family", "details_note", "minimise",
           "minimised_headers", "truncate_ip"]

# A header mailseen adds to a view's stored headers when they are not what the client sent.
DETAILS_HEADER = "x-mailseen-details"
PURGED = "purged"  # its value once the retention purge cleared the view's details
_IPV4_PREFIX = 24
_IPV6_PREFIX = 48
# Headers that name the client or its network, dropped from a minimised view.
_IDENTIFYING = frozenset({"via", "from"})
# A version: digits with dots ("16", "8.1", "120.0.6099"), as a word of its own.
_VERSION = re.compile(r"\s+\d+(?:\.\d+)*(?=\s|\)|$)")


def truncate_ip(ip: str | None) -> str | None:
    """The network of ``ip`` with its host bits zeroed: IPv4 /24, IPv6 /48 (an IPv4 address
    written as IPv6, ::ffff:a.b.c.d, is truncated as IPv4). Text that is no address: None."""
    if not ip:
        return None
    parts = ip.split(".")
    # Nearly every hit: a plain IPv4 address, cut without parsing it into an object (the
    # writer thread does this for every view).
    if len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 and
                               (p == "0" or p[0] != "0") for p in parts):
        return f"{parts[0]}.{parts[1]}.{parts[2]}.0"
    try:
        address = ipaddress.ip_address(ip.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = _IPV4_PREFIX if address.version == 4 else _IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


@functools.lru_cache(maxsize=1024)
def client_family(client: str) -> str:
    """The client the judge named, without its version numbers: "Outlook 16 on Windows" →
    "Outlook on Windows", "Chrome 120 on Windows 8.1" → "Chrome on Windows"."""
    family = _VERSION.sub("", client).strip()
    return family or "unknown"


def details_note(details: ViewDetails) -> str:
    """The value of :data:`DETAILS_HEADER` for a view stored at ``details``."""
    return f"ip={details.ip}; user-agent={details.user_agent}"


def minimised_headers(headers: dict[str, str], details: ViewDetails) -> dict[str, str]:
    """The headers to store with a view at ``details`` (unchanged at full detail)."""
    if details.full:
        return headers
    kept = {k: v for k, v in headers.items() if k not in _IDENTIFYING}
    referer = kept.get("referer")
    if referer is not None:
        origin = _origin(referer)
        if origin:
            kept["referer"] = origin
        else:
            del kept["referer"]
    kept[DETAILS_HEADER] = details_note(details)
    return kept


def minimise(ip: str | None, user_agent: str | None, headers: dict[str, str], client: str,
             details: ViewDetails) -> tuple[str | None, str | None, dict[str, str]]:
    """(IP, user agent, headers) of a judged view as stored at ``details``; ``client`` is
    the client the judge named."""
    if details.full:
        return ip, user_agent, headers
    if details.ip == "truncated":
        ip = truncate_ip(ip)
    elif details.ip == "none":
        ip = None
    if details.user_agent == "family" and user_agent is not None:
        user_agent = client_family(client)
    return ip, user_agent, minimised_headers(headers, details)


def _origin(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        return None
    if not parts.scheme or not host:
        return None
    return f"{parts.scheme.lower()}://{host}"
