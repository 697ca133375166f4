"""Response headers shared by the web app, the API and their static files."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["CONTENT_SECURITY_POLICY", "nosniff"]

# Everything the app's pages (and the API's documentation) load comes from the app itself.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'")

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


def nosniff(send: Send) -> Send:
    """``send`` adding ``X-Content-Type-Options: nosniff`` to a response that lacks it, so a
    browser never runs a JSON answer or an uploaded file as a script or a page."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.setdefault("headers", [])
            if not any(name.lower() == b"x-content-type-options" for name, _ in headers):
                message["headers"] = [*headers, (b"x-content-type-options", b"nosniff")]
        await send(message)

    return sending
