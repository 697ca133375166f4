"""The ASGI application `mailseen serve` runs: the pixel, the API, and their lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from ..services.instance import Instance
from ..services.recorder import ViewRecorder
from .api import build_api
from .pixel import PixelApp, Receive, Scope, Send

__all__ = ["MailseenApp"]

log = logging.getLogger(__name__)

_LANDING = b"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>mailseen</title><meta name="viewport" content="width=device-width, initial-scale=1">
</head><body style="font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;
padding:0 1em"><h1>mailseen is running</h1><p>Email open tracking for team mailboxes.
The REST API and its documentation are at <a href="/api/v1/docs">/api/v1/docs</a>; the command
line is <code>mailseen --help</code>.</p></body></html>"""


class MailseenApp:
    """Routes ``/t/`` to the framework-less pixel app and everything else to the API, and
    runs the view recorder and (optionally) the delivery worker for the server's lifetime."""

    def __init__(self, instance: Instance, *, run_worker: bool = True) -> None:
        self.instance = instance
        self.recorder = ViewRecorder(instance.store)
        self.pixel = PixelApp(instance.signer, self.recorder,
                              instance.settings.trusted_proxies)
        self.api = build_api(instance)
        self.run_worker = run_worker
        self._stop = asyncio.Event()
        self._worker_task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path.startswith("/t/"):
                await self.pixel(scope, receive, send)
            elif path == "/":
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"content-length", str(len(_LANDING)).encode())]})
                await send({"type": "http.response.body", "body": _LANDING})
            else:
                await self.api(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.api(scope, receive, send)

    async def startup(self) -> None:
        await self.recorder.start()
        if self.run_worker:
            worker = self.instance.worker()
            loop = asyncio.get_running_loop()

            def wake() -> None:
                # The API queues messages from its threads; wake the worker on its own loop.
                loop.call_soon_threadsafe(worker.wake)

            self.instance.sender.on_queued = wake
            self._worker_task = asyncio.create_task(worker.run(self._stop), name="delivery")

    async def shutdown(self) -> None:
        self._stop.set()
        if self._worker_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker_task
        await self.recorder.stop()
        log.info("stopped: pending views written, delivery worker finished")

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
    X-Forwarded-For to believe (only from configured trusted proxies)."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          proxy_headers=False, server_header=False, ws="none", lifespan="on")
