"""``GET``/``HEAD /c/<token>``: the click redirect.

The token signs the copy, the link's index and the URL together (core/tokens.py
``ClickSigner``): a genuine token is answered ``302`` to exactly the URL it signs, anything
else (forged, altered, truncated, another URL) gets a small "link not valid" page and ``404``,
never a redirect. No database read decides the answer.

The click is handed to the click recorder (group commit, like pixel hits) and the answer
waits for its batch's commit for at most :data:`WAIT_SECONDS`: normally the click is durable
before the browser moves on, and a slow or locked database never holds a person up for
longer than that (the click is still written with its batch).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from ...clock import SYSTEM, Clock
from ...core.clientip import Network
from ...core.tokens import ClickSigner
from ...records import ClickIn
from ...services.clicks import ClickRecorder
from .endpoint import Receive, Scope, Send, read_request

__all__ = ["WAIT_SECONDS", "ClickApp"]

log = logging.getLogger(__name__)

WAIT_SECONDS = 0.25
_PREFIX = "/c/"
_NOT_VALID = (b"<!doctype html><html lang=en><meta charset=utf-8>"
              b"<meta name=viewport content='width=device-width'><title>Link not valid</title>"
              b"<body style='font:16px system-ui,sans-serif;margin:3em auto;max-width:34em;"
              b"padding:0 1em'><h1 style='font-size:1.3em'>This link is not valid</h1>"
              b"<p>The address of this link was changed or cut short on its way, so it "
              b"cannot be followed. Open the link from the original e-mail again.</p>")
_NO_CACHE = (b"cache-control", b"no-store, private")
_NOT_VALID_START = {"type": "http.response.start", "status": 404, "headers": [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-length", str(len(_NOT_VALID)).encode()), _NO_CACHE,
    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'")]}


def _safe_location(url: str) -> bool:
    """A URL that can go in a Location header as it is: printable ASCII (what a browser's
    serialisation of an http(s) URL is), so nothing can split the header."""
    return url.isascii() and url.isprintable() and " " not in url and \
        url.startswith(("http://", "https://"))


class ClickApp:
    def __init__(self, signer: ClickSigner, recorder: ClickRecorder,
                 trusted_proxies: Sequence[Network] = (), clock: Clock = SYSTEM,
                 wait: float = WAIT_SECONDS) -> None:
        self.signer = signer
        self.recorder = recorder
        self.trusted = tuple(trusted_proxies)
        self.now = clock.now
        self.wait = wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await send({"type": "http.response.start", "status": 405,
                        "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        peer = scope.get("client")
        click = self.click_of(method, scope["path"], scope["headers"],
                              peer[0] if peer else None)
        if click is None:
            await send(_NOT_VALID_START)
            await send({"type": "http.response.body",
                        "body": _NOT_VALID if method == "GET" else b""})
            return
        await self._record(click)
        await send({"type": "http.response.start", "status": 302, "headers": [
            (b"location", click.url.encode("ascii")), (b"content-length", b"0"), _NO_CACHE,
            (b"referrer-policy", b"no-referrer")]})
        await send({"type": "http.response.body", "body": b""})

    async def _record(self, click: ClickIn) -> None:
        try:
            commit = self.recorder.submit(click)
            if commit.done:
                return
            written: asyncio.Future[None] = asyncio.get_running_loop().create_future()

            def wake() -> None:
                if not written.done():
                    written.set_result(None)

            commit.on_done(wake)
            try:
                await asyncio.wait_for(written, self.wait)
            except TimeoutError:
                log.warning("click not committed within %.2f s; redirecting anyway", self.wait)
        except Exception:  # never let recording stop the redirect
            log.exception("click not recorded")

    def click_of(self, method: str, path: str, headers: Iterable[tuple[bytes, bytes]],
                 peer: str | None) -> ClickIn | None:
        """The click a request of ``path`` records, or None when the path holds no genuine
        token (or one whose URL cannot be a Location). Checking it needs no database."""
        if not path.startswith(_PREFIX):
            return None
        ref = self.signer.check(path[len(_PREFIX):])
        if ref is None or not _safe_location(ref.url):
            return None
        kept, user_agent, ip = read_request(headers, peer, self.trusted)
        return ClickIn(message_id=0, recipient=0, at=self.now(), method=method, ip=ip,
                       user_agent=user_agent, headers=kept, copy_key=ref.copy_key,
                       link=ref.link, url=ref.url)
