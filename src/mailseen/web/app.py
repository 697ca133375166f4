"""The ASGI application `mailseen serve` runs: the pixel, the API, and their lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import uvicorn

from ..services.instance import Instance
from .api import build_api
from .connections import ConnectionGuard, guarded_protocol
from .headers import nosniff
from .limits import MAX_API_BODY, MAX_FORM_BODY, limit_body
from .pixel.click import ClickApp
from .pixel.endpoint import PixelApp, Receive, Scope, Send
from .site import build_site

__all__ = ["Background", "MailseenApp", "server_config"]

# Work that runs beside the server until the event it is given is set (an IMAP poller …).
Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

log = logging.getLogger(__name__)

class MailseenApp:
    """Routes ``/t/`` to the framework-less pixel app, ``/c/`` to the click redirect,
    ``/api/`` to the REST API and the rest to the web app, and runs the view and click
    recorders and (optionally) the delivery worker for the server's lifetime."""

    def __init__(self, instance: Instance, *, run_worker: bool = True,
                 background: Sequence[Background] = ()) -> None:
        self.instance = instance
        self.recorder = instance.view_recorder()
        self.pixel = PixelApp(instance.signer, self.recorder,
                              instance.settings.trusted_proxies, instance.clock)
        self.click_recorder = instance.click_recorder()
        signer = instance.sender.click_signer
        assert signer is not None
        self.click = ClickApp(signer, self.click_recorder, instance.settings.trusted_proxies,
                              instance.clock)
        self.api = build_api(instance)
        self.site = build_site(instance)
        self.run_worker = run_worker
        self.background = list(background)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path.startswith("/t/"):
                await self.pixel(scope, receive, send)
            elif path.startswith("/c/"):
                await self.click(scope, receive, send)
            elif path.startswith("/api/"):
                await self.api(scope, limit_body(scope, receive, MAX_API_BODY), nosniff(send))
            else:
                await self.site(scope, limit_body(scope, receive, MAX_FORM_BODY), nosniff(send))
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.api(scope, receive, send)

    async def startup(self) -> None:
        await self.recorder.start()
        await self.click_recorder.start()
        if self.run_worker:
            worker = self.instance.worker()
            loop = asyncio.get_running_loop()

            def wake() -> None:
                # The API queues messages from its threads; wake the worker on its own loop.
                loop.call_soon_threadsafe(worker.wake)

            self.instance.sender.on_queued = wake
            self._tasks.append(asyncio.create_task(worker.run(self._stop), name="delivery"))
        for job in self.background:
            self._tasks.append(asyncio.create_task(job(self._stop)))

    async def shutdown(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.recorder.stop()
        await self.click_recorder.stop()
        log.info("stopped: pending views written, background work finished")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def server_config(app: MailseenApp, host: str, port: int) -> uvicorn.Config:
    """How mailseen runs under uvicorn. Proxy headers are off: the pixel app decides which
    X-Forwarded-For to believe (only from configured trusted proxies). The protocol is
    uvicorn's httptools one with a limit on the request head's size (web/limits.py), on the
    time it takes and on connections per client (web/connections.py)."""
    settings = app.instance.settings
    guard = ConnectionGuard(settings.head_timeout, settings.connections_per_client,
                            settings.trusted_proxies)
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          proxy_headers=False, server_header=False, ws="none", lifespan="on",
                          http=guarded_protocol(guard))
