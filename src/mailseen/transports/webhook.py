"""Webhooks leave here: one HTTP POST, redirects not followed, the answer's status and the
start of its body kept for the delivery log. The standard library's client, run in a
thread: a webhook is one small request, and nothing else in mailseen speaks HTTP out."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["HttpPoster", "PostResult"]

_USER_AGENT = "mailseen-webhooks/1"
_KEEP = 300  # characters of an answer's body kept for the log


@dataclass(frozen=True)
class PostResult:
    status: int | None  # None: no HTTP answer at all (refused, timed out, bad TLS)
    note: str

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect is an answer, not an instruction: the event goes only where it was sent.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class HttpPoster:
    def __init__(self, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect())

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> PostResult:
        return await asyncio.to_thread(self._post, url, body, dict(headers))

    def _post(self, url: str, body: bytes, headers: dict[str, str]) -> PostResult:
        headers.setdefault("user-agent", _USER_AGENT)
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                text = answer.read(_KEEP).decode("utf-8", "replace")
                return PostResult(answer.status, _line(text))
        except urllib.error.HTTPError as exc:
            text = exc.read(_KEEP).decode("utf-8", "replace") if exc.fp else ""
            return PostResult(exc.code, _line(f"HTTP {exc.code} {exc.reason}: {text}"))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            return PostResult(None, _line(f"no answer: {reason}"))


def _line(text: str) -> str:
    return " ".join(text.split())[:_KEEP]
