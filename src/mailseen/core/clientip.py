"""Which address a pixel hit came from, believing X-Forwarded-For only from trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = ["client_ip"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[2001:db8::1]:443"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "192.0.2.1:443"
        value = value.split(":", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def client_ip(peer: str | None, forwarded_for: str | None,
              trusted: Sequence[Network]) -> str | None:
    """The peer, unless it is a trusted proxy: then the right-most X-Forwarded-For entry
    that is not itself a trusted proxy (entries further left are the client's to forge)."""
    if peer is None:
        return None
    addr = _parse(peer)
    if addr is None or not trusted or not forwarded_for:
        return peer
    if not any(addr in net for net in trusted):
        return peer
    hops = [h for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        hop_addr = _parse(hop)
        if hop_addr is None:
            return peer  # a garbled header: fall back to what we know
        if not any(hop_addr in net for net in trusted):
            return str(hop_addr)
    return str(_parse(hops[0])) if hops else peer
