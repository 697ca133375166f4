"""Bounds on connections to `mailseen serve`: how long a request head may take to arrive, and
how many connections one client may hold open.

uvicorn has no head timeout: a connection that never completes its request head (a slowloris
client trickling one header line at a time, or one that never sends a byte) holds a socket for
ever, and some thousands of them exhaust the process's file descriptors, after which no web,
API or pixel connection can be accepted. Here every connection is stamped with a coarse tick
when it starts waiting for a request head (on connecting, and after each answer); a sweeper
advances the tick every half ``head_timeout`` and closes connections whose head has not been
complete for three ticks, so a head gets between one and one and a half ``head_timeout``.
A connection whose answer is still being produced or sent is never cut.

The per-client cap counts connections by peer address (an IPv6 client by its /64). Trusted
proxies are exempt: every client behind them shares their address, and the proxy bounds its
own clients (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import resource
from collections.abc import Sequence
from typing import Any

import uvicorn

from ..core.clientip import Network, client_key
from .limits import BoundedHttpProtocol

__all__ = ["HEAD_TIMEOUT", "PER_CLIENT", "ConnectionGuard", "GuardedHttpProtocol",
           "guarded_protocol", "raise_open_files_limit"]

log = logging.getLogger(__name__)

# nginx's client_header_timeout is 60 s; a browser sends its head in one packet, and a client
# on a bad mobile link still within a few seconds.
HEAD_TIMEOUT = 10.0
# A browser opens at most six connections to a site, a mail provider's image proxy some tens
# at a busy moment; a single address holding more is not a person reading mail.
PER_CLIENT = 100

_TOO_MANY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nretry-after: 10\r\n"
             b"connection: close\r\n\r\n")
_TOO_SLOW = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@functools.lru_cache(maxsize=4096)
def _key_for(peer: str, trusted: tuple[Network, ...]) -> str | None:
    # Cached: clients reconnect from the same few addresses, and parsing costs microseconds.
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return None  # a Unix socket: whatever is in front of it is trusted
    if any(addr in net for net in trusted):
        return None
    return client_key(peer)


class ConnectionGuard:
    """One server's open connections: counts by client and the tick that ages their heads."""

    def __init__(self, head_timeout: float = HEAD_TIMEOUT, per_client: int = PER_CLIENT,
                 trusted_proxies: Sequence[Network] = ()) -> None:
        self.head_timeout = head_timeout
        self.per_client = per_client
        self.trusted = tuple(trusted_proxies)
        self.tick = 0
        self.by_client: dict[str, int] = {}
        self.open: set[GuardedHttpProtocol] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def key_for(self, peer: str | None) -> str | None:
        """What a peer is counted as; None for peers that are not capped."""
        return _key_for(peer, self.trusted) if peer else None

    def admit(self, conn: GuardedHttpProtocol) -> bool:
        """Count ``conn`` in, unless its client already holds ``per_client`` connections."""
        key = conn.client_key
        if key is not None:
            held = self.by_client.get(key, 0)
            if held >= self.per_client:
                return False
            self.by_client[key] = held + 1
        self.open.add(conn)
        if self._sweeper is None:
            self._sweeper = conn.loop.call_later(self.head_timeout / 2, self._sweep, conn.loop)
        return True

    def release(self, conn: GuardedHttpProtocol) -> None:
        if conn not in self.open:
            return
        self.open.discard(conn)
        key = conn.client_key
        if key is not None:
            held = self.by_client[key] - 1
            if held:
                self.by_client[key] = held
            else:
                del self.by_client[key]

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self.tick += 1
        for conn in list(self.open):
            conn.check_head(self.tick)
        # With nothing open the sweeper stops; the next connection starts it again.
        self._sweeper = (loop.call_later(self.head_timeout / 2, self._sweep, loop)
                         if self.open else None)


class GuardedHttpProtocol(BoundedHttpProtocol):
    """The bounded httptools protocol, counted by a ConnectionGuard and cut when its request
    head takes too long. ``guard`` is set on the subclass made by :func:`guarded_protocol`."""

    guard: ConnectionGuard

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.client_key: str | None = None
        self.head_since: int | None = None  # the tick a head started being waited for
        self._admitted = False
        self._cut = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.client_key = self.guard.key_for(self.client[0] if self.client else None)
        self.head_since = self.guard.tick
        self._admitted = self.guard.admit(self)
        if not self._admitted:
            self._cut = True
            transport.write(_TOO_MANY)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._admitted:
            self.guard.release(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.head_since is None:  # a pipelined head begins while an answer is made
            self.head_since = self.guard.tick

    def on_headers_complete(self) -> None:
        self.head_since = None
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # Pipelined requests whose heads are complete wait in ``pipeline``: one starts now.
        if not self.pipeline and self.head_since is None:
            self.head_since = self.guard.tick
        super().on_response_complete()

    def check_head(self, tick: int) -> None:
        """Close the connection if its head has been waited for three ticks (abort it if it
        was closed a tick ago and is still there: a client that reads nothing)."""
        if self._cut:
            self.transport.abort()
            return
        if self.head_since is None or tick - self.head_since < 3:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # an answer is still being made or sent
        self._cut = True
        if self._head_bytes:
            self.transport.write(_TOO_SLOW)
        self.transport.close()


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedHttpProtocol]:
    """The protocol class for one server: uvicorn makes one instance per connection, so the
    guard they share is a class attribute of a class made for that server."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"guard": guard})


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to the hard limit; the new soft limit.

    Every connection is a file descriptor, and the soft limit (often 1024) is what runs out
    first under many connections; the hard limit is what the operator allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)
    return int(soft)
