"""`/docs`: Swagger UI served from installed packages, so that it works on a host with no
internet and under a Content-Security-Policy that allows nothing from elsewhere.

FastAPI's own page loads Swagger UI from a CDN and starts it with an inline script. Here the
Swagger UI files come from the `fastapi-swagger` package (a plain copy of each Swagger UI release,
kept current), and the page is started by `start.js` beside this module. ReDoc is not served.
"""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse

from shared.errors import NotFound

DOCS_PATH = "/docs"
_SWAGGER_UI = Path(str(resources.files("fastapi_swagger") / "resources"))
# Name in the URL -> file on disk: an allow-list, not a directory, so nothing else is served.
_ASSETS = {
    "swagger-ui-bundle.js": _SWAGGER_UI / "swagger-ui-bundle.js",
    "swagger-ui.css": _SWAGGER_UI / "swagger-ui.css",
    "favicon.png": _SWAGGER_UI / "favicon-32x32.png",
    "start.js": Path(__file__).with_name("start.js"),
}


def install_docs(app: FastAPI) -> None:
    """Serve `/docs` and its files; the app must be created with `docs_url=None` and
    `redoc_url=None` (FastAPI's pages would load from a CDN)."""
    if app.openapi_url is None:
        return
    openapi_url = app.openapi_url
    title = html.escape(f"{app.title} API")

    @app.get(DOCS_PATH, include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        assets = html.escape(f"{root}{DOCS_PATH}")
        spec = html.escape(f"{root}{openapi_url}")
        return HTMLResponse(
            "<!doctype html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title}</title>"
            f'<link rel="icon" type="image/png" href="{assets}/favicon.png">'
            f'<link rel="stylesheet" href="{assets}/swagger-ui.css"></head>'
            f'<body><div id="swagger-ui" data-openapi-url="{spec}"></div>'
            f'<script src="{assets}/swagger-ui-bundle.js"></script>'
            f'<script src="{assets}/start.js"></script></body></html>\n'
        )

    @app.get(DOCS_PATH + "/{name}", include_in_schema=False)
    async def docs_asset(name: str) -> FileResponse:
        path = _ASSETS.get(name)
        if path is None:
            raise NotFound("no such file")
        return FileResponse(path)
