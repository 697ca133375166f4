"""The ASGI application `mailseen serve` runs: the pixel, the API, and their lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn

from ..services.instance import Instance
from ..services.classification import Judge
from ..services.recorder import ViewRecorder
from .api import build_api
from .site import build_site
from .pixel import PixelApp, Receive, Scope, Send

__all__ = ["MailseenApp"]

log = logging.getLogger(__name__)

class MailseenApp:
    """Routes ``/t/`` to the framework-less pixel app, ``/api/`` to the REST API and the
    rest to the web app, and
    runs the view recorder and (optionally) the delivery worker for the server's lifetime."""

    def __init__(self, instance: Instance, *, run_worker: bool = True) -> None:
        self.instance = instance
        self.recorder = ViewRecorder(instance.store, Judge(instance.settings.data_dir))
        self.pixel = PixelApp(instance.signer, self.recorder,
                              instance.settings.trusted_proxies)
        self.api = build_api(instance)
        self.site = build_site(instance)
        self.run_worker = run_worker
        self._stop = asyncio.Event()
        self._worker_task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            if path.startswith("/t/"):
                await self.pixel(scope, receive, send)
            elif path.startswith("/api/"):
                await self.api(scope, receive, send)
            else:
                await self.site(scope, receive, send)
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
