"""The API's documentation page (Swagger UI) with its assets served by the app itself.

The assets come from the pinned PyPI package ``swagger-ui-py`` (Swagger UI's own
distribution files and licence, Apache-2.0); only its files are read, none of its code runs.
Nothing is loaded from another origin, so the page works offline and runs under the app's
Content-Security-Policy: Swagger UI is started by a script file, not an inline script.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response

from ..headers import CONTENT_SECURITY_POLICY

__all__ = ["add_docs"]

_START = Path(__file__).parent / "static" / "apidocs.js"
# What the page needs of the package, and its licence (served so it travels with the code).
_ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript",
           "LICENSE": "text/plain"}


def _swagger_ui_files() -> Path:
    """The folder of Swagger UI's files inside the installed package (found, not imported:
    the package's own code needs libraries mailseen does not)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing: pip install mailseen again")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def add_docs(api: FastAPI, docs_url: str, openapi_url: str) -> None:
    """Serve the documentation page at ``docs_url`` and its assets under it."""
    assets = f"{docs_url}/assets"
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{api.title} API</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{docs_url}/start.js"></script>
</body>
</html>
"""
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Frame-Options": "DENY",
               "Referrer-Policy": "same-origin", "Cache-Control": "no-cache"}
    start_js = _START.read_text()
    folder = _swagger_ui_files()

    async def docs() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    async def start() -> Response:
        return Response(start_js, media_type="text/javascript")

    api.add_api_route(docs_url, docs, methods=["GET"], include_in_schema=False)
    api.add_api_route(f"{docs_url}/start.js", start, methods=["GET"], include_in_schema=False)
    for name, media_type in _ASSETS.items():
        api.add_api_route(f"{assets}/{name}", _file(folder / name, media_type),
                          methods=["GET"], include_in_schema=False)


def _file(path: Path, media_type: str) -> Callable[[], Awaitable[FileResponse]]:
    async def serve() -> FileResponse:
        return FileResponse(path, media_type=media_type)

    return serve
