"""Which address a request came from, believing X-Forwarded-For only from trusted proxies, and
what one client is counted as when limiting it."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = ["Network", "client_ip", "client_key"]

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


def client_key(address: str) -> str:
    """What one client is counted as in limits: the address, or for IPv6 its /64 (one host
    usually holds a whole /64, so counting single addresses would cost it nothing)."""
    try:
        addr = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]  # not an address: bounded, it becomes part of a stored key
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)
