"""Whether recipients out there can fetch our pixel: the public URL (what pixel URLs start
with) looked at the way a recipient's mail client would have to reach it.

A view is recorded only when a recipient's client (or its image proxy: Gmail's, Apple's)
fetches the pixel. A URL on a loopback or private address, or under a name only the local
network resolves, never reaches us from outside: every message is sent tracked and no view
is ever recorded. Plain http does reach us, but some clients and proxies refuse it and the
token travels in clear, so it is a warning rather than "unreachable".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from .urls import browser_url

__all__ = ["Reach", "host_reach", "public_url_reach", "reach_warning"]

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Networks recipients cannot reach us on, each with the words the admin reads. Sources:
# RFC 1122 (loopback, "this network"), RFC 1918 (private IPv4), RFC 3927 and RFC 4291
# (link-local), RFC 4193 (unique local IPv6), RFC 6598 (carrier-grade NAT shared space).
_NETWORKS: tuple[tuple[str, str], ...] = (
    ("127.0.0.0/8", "a loopback address, which only this machine can reach"),
    ("::1/128", "a loopback address, which only this machine can reach"),
    ("0.0.0.0/8", "an unspecified address, which no one else can reach"),
    ("::/128", "an unspecified address, which no one else can reach"),
    ("10.0.0.0/8", "a private network address (RFC 1918)"),
    ("172.16.0.0/12", "a private network address (RFC 1918)"),
    ("192.168.0.0/16", "a private network address (RFC 1918)"),
    ("169.254.0.0/16", "a link-local address"),
    ("fe80::/10", "a link-local address"),
    ("fc00::/7", "a unique local IPv6 address (a private network)"),
    ("100.64.0.0/10", "a carrier-grade NAT address (RFC 6598), not reachable from outside"),
)
_PARSED = tuple((ipaddress.ip_network(net), why) for net, why in _NETWORKS)
# Names that never resolve outside a local network. Sources: RFC 6761 (localhost),
# RFC 6762 (.local, multicast DNS), RFC 8375 (.home.arpa), ICANN's 2024 reservation of
# .internal for private use.
_LOOPBACK_NAME = "a name for this machine only"
_LOCAL_SUFFIXES = (("local", "a multicast DNS name (.local) of the local network"),
                   ("home.arpa", "a home network name (.home.arpa)"),
                   ("internal", "a private network name (.internal)"))


@dataclass(frozen=True)
class Reach:
    """What recipients can make of the public URL. ``level``: "ok"; "warning" (reachable,
    but not as it should be: plain http); "unreachable" (no recipient's client outside
    this machine or network can fetch the pixel). ``problem`` says why, in plain words."""

    url: str
    level: Literal["ok", "warning", "unreachable"]
    problem: str | None = None

    @property
    def reachable(self) -> bool:
        return self.level != "unreachable"

    @property
    def message(self) -> str | None:
        """One sentence for the admin, or None when all is well."""
        if self.level == "unreachable":
            return (f"The pixel URL {self.url} is not reachable by recipients: "
                    f"{self.problem}. No view will be recorded until the public URL is one "
                    "they can reach.")
        if self.level == "warning":
            return f"The pixel URL {self.url} {self.problem}."
        return None


def host_reach(host: str) -> str | None:
    """Why ``host`` (a name or an address, as in a URL) cannot be reached from the
    Internet, or None when it can as far as its spelling tells."""
    host = host.strip("[]").rstrip(".").lower()
    if not host:
        return "no host"
    address = _address(host)
    if address is not None:
        for network, why in _PARSED:
            if address in network:
                return why
        if not address.is_global:
            return "a reserved address that is not routed on the Internet"
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return _LOOPBACK_NAME
    for suffix, why in _LOCAL_SUFFIXES:
        if host == suffix or host.endswith("." + suffix):
            return why
    if "." not in host:
        return "a single-label name that only this network can resolve"
    return None


@lru_cache(maxsize=8)
def public_url_reach(base_url: str) -> Reach:
    """Whether recipients can reach ``base_url`` (the public URL pixel URLs start with)."""
    url = base_url.rstrip("/")
    parsed = browser_url(url)
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        return Reach(url, "unreachable", "it is not an absolute http(s) URL")
    why = host_reach(parsed.hostname)
    if why is not None:
        return Reach(url, "unreachable", f"its host is {why}")
    if parsed.scheme == "http":
        return Reach(url, "warning", "uses plain http: some mail clients and image proxies "
                     "refuse it and the pixel's token travels unencrypted; use https")
    return Reach(url, "ok")


def reach_warning(base_url: str, recipients: list[str]) -> str | None:
    """What a tracked message's decision should add when its pixel cannot reach some of
    ``recipients``, or None. A recipient whose own domain is local (``user@localhost``, a
    ``.local`` or single-label name) may share the network with us, so mail to such
    recipients only carries no warning; anyone else cannot fetch an unreachable pixel."""
    reach = public_url_reach(base_url)
    if reach.reachable:
        return None
    if recipients and all(_local_recipient(r) for r in recipients):
        return None
    return f"the pixel URL {reach.url} is not reachable by recipients"


def _local_recipient(address: str) -> bool:
    domain = address.rpartition("@")[2]
    return bool(domain) and host_reach(domain) is not None


def _address(host: str) -> _Address | None:
    try:
        address = ipaddress.ip_address(host.partition("%")[0])  # an IPv6 zone id
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
