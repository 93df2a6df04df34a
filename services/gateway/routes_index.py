"""`GET /v1`: a small JSON index, so that the API's own URL (the one `up` prints) answers."""

from __future__ import annotations

from importlib import metadata

from fastapi import APIRouter, Request

from services.gateway.schemas import ApiIndex
from shared.apidocs import DOCS_PATH

router = APIRouter(tags=["meta"])

try:
    VERSION = metadata.version("video2mp3")
except metadata.PackageNotFoundError:  # run from a tree that was never installed
    VERSION = "unknown"


@router.get("/v1")
async def api_index(request: Request) -> ApiIndex:
    root = request.scope.get("root_path", "").rstrip("/")
    return ApiIndex(
        name="video2mp3",
        version=VERSION,
        docs=root + DOCS_PATH,
        openapi=root + (request.app.openapi_url or ""),
        web=root + "/",
    )
