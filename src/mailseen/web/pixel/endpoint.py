"""``GET``/``HEAD /t/<token>.gif``: always the image, whatever happens.

Plain ASGI: this path is the busiest one and needs no routing, validation or middleware.
A genuine token's view is committed (group commit) before the response goes out; anything
else (unknown, forged, truncated or oversized tokens, a database failure) still gets the same
image and nothing is recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

from ...clock import SYSTEM, Clock
from ...core.clientip import Network, client_ip
from ...core.pixel import GIF
from ...core.tokens import TOKEN_LENGTH, TokenSigner
from ...records import ViewIn
from ...services.classification import OWN_VIEWER_HEADER
from ...services.recorder import ViewRecorder
from ..cookies import SESSION_COOKIE

__all__ = ["IMAGE_HEADERS", "PixelApp"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# Request headers kept with each view, for classifying the hit later.
KEPT_HEADERS = frozenset({b"accept", b"accept-language", b"via", b"from", b"referer",
                          b"sec-purpose", b"purpose", b"x-moz"})
_MAX_HEADER_VALUE = 1024
_READ_HEADERS = KEPT_HEADERS | {b"user-agent", b"x-forwarded-for"}

IMAGE_HEADERS = [
    (b"content-type", b"image/gif"),
    (b"content-length", str(len(GIF)).encode()),
    (b"cache-control", b"no-store, no-cache, must-revalidate, private, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"Thu, 01 Jan 1970 00:00:00 GMT"),
    (b"x-content-type-options", b"nosniff"),
]
_IMAGE_START = {"type": "http.response.start", "status": 200, "headers": IMAGE_HEADERS}
_IMAGE_BODY = {"type": "http.response.body", "body": GIF}
_EMPTY_BODY = {"type": "http.response.body", "body": b""}
_SESSION_COOKIE = SESSION_COOKIE.encode() + b"="
_PREFIX_LEN = len("/t/")
_SUFFIX = ".gif"


def _header_text(raw: bytes) -> str:
    """A header value as stored: bounded, and without NUL, which PostgreSQL refuses in text
    (one such hit would otherwise fail the whole batch it is committed with)."""
    if len(raw) <= _MAX_HEADER_VALUE and b"\x00" not in raw:  # nearly every value
        return raw.decode("latin-1")
    return raw[:_MAX_HEADER_VALUE].replace(b"\x00", b"").decode("latin-1")


def read_request(headers: Iterable[tuple[bytes, bytes]], peer: str | None,
                 trusted: Sequence[Network]) -> tuple[dict[str, str], str | None, str | None]:
    """What a pixel hit or a click keeps of its request: the headers judging reads, the
    user agent, and the client's address (the peer's, or from X-Forwarded-For when the
    peer is a trusted proxy). A signed-in team member's browser is marked: their own
    viewing never counts."""
    kept: dict[str, str] = {}
    user_agent: str | None = None
    forwarded: str | None = None
    for raw_name, raw_value in headers:
        name = raw_name.lower()
        if name in _READ_HEADERS:
            value = _header_text(raw_value)
            if name == b"user-agent":
                user_agent = value
            elif name == b"x-forwarded-for":
                forwarded = value
            else:
                kept[name.decode()] = value
        elif name == b"cookie" and _SESSION_COOKIE in raw_value:
            kept[OWN_VIEWER_HEADER] = "1"
    ip = peer
    if trusted and forwarded:  # else the peer is the client: no need to parse it
        ip = client_ip(ip, forwarded, trusted)
    return kept, user_agent, ip


class PixelApp:
    def __init__(self, signer: TokenSigner, recorder: ViewRecorder,
                 trusted_proxies: Sequence[Network] = (), clock: Clock = SYSTEM) -> None:
        self.signer = signer
        self.recorder = recorder
        self.trusted = tuple(trusted_proxies)
        self.now = clock.now  # a hit's time, judged against the sending time on one clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 405,
                        "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")]})
            await send(_EMPTY_BODY)
            return
        try:
            peer = scope.get("client")
            view = self.view_of(method, scope["path"], scope["headers"],
                                peer[0] if peer else None)
            if view is not None:
                await self.recorder.record(view)
        except Exception:  # never let recording stop the image
            log.exception("pixel hit not recorded")
        await send(_IMAGE_START)
        await send(_IMAGE_BODY if method == "GET" else _EMPTY_BODY)

    def view_of(self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]],
                peer: str | None) -> ViewIn | None:
        """The view a ``GET``/``HEAD`` of ``path`` records, or None when the path holds no
        genuine token. Checking the token needs no database."""
        if not path.endswith(_SUFFIX) or len(path) != _PREFIX_LEN + TOKEN_LENGTH + len(_SUFFIX):
            return None
        ref = self.signer.check(path[_PREFIX_LEN : -len(_SUFFIX)])
        if ref is None:
            return None
        kept, user_agent, ip = read_request(headers, peer, self.trusted)
        return ViewIn(message_id=ref.message_id, recipient=ref.recipient, at=self.now(),
                      method=method, ip=ip, user_agent=user_agent, headers=kept,
                      copy_key=ref.copy_key)
