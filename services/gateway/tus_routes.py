"""`/v1/uploads`: resumable uploads speaking tus 1.0.0 (core, creation, creation-with-upload,
termination, expiration). The last byte of an upload makes its job."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from services.gateway import tus_service
from services.gateway.deps import JobsWriter, State
from services.gateway.state import GatewayState
from services.gateway.tus_protocol import (
    JOB_ID_HEADER,
    capability_headers,
    check_offset_body,
    check_version,
    http_date,
    parse_length,
    parse_metadata,
    tus_headers,
)
from services.gateway.tus_service import Progress
from services.gateway.tus_store import UploadStore
from shared.errors import AppError
from shared.http import error_responses
from shared.settings import Settings

log = logging.getLogger(__name__)


class TusRoute(APIRoute):
    """Every answer carries `Tus-Resumable`, errors included (the app's handlers would drop it)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                response = await handle(request)
            except AppError as exc:
                response = JSONResponse(exc.to_dict(), status_code=exc.status_code)
                if exc.status_code == 401:
                    response.headers["WWW-Authenticate"] = "Bearer"
                if exc.status_code == 412:
                    response.headers["Tus-Version"] = capability_headers(0)["Tus-Version"]
                response.headers.update(exc.headers or {})
            response.headers.update(tus_headers())
            return response

        return handler


async def tus_version(
    request: Request, tus_resumable: Annotated[str | None, Header()] = None
) -> None:
    """Checked before anything else (credentials included); OPTIONS needs no version."""
    if request.method != "OPTIONS":
        check_version(tus_resumable)


def get_uploads(request: Request) -> UploadStore:
    uploads: UploadStore = request.app.state.tus_uploads
    return uploads


Uploads = Annotated[UploadStore, Depends(get_uploads)]


async def _sweep_forever(state: GatewayState, uploads: UploadStore) -> None:
    while True:
        try:
            await tus_service.sweep(state, uploads)
        except Exception:
            log.warning("upload sweep failed; retried next round", exc_info=True)
        await asyncio.sleep(_sweep_interval(state.settings))


def _sweep_interval(settings: Settings) -> float:
    # Often enough that an expired upload goes within a tenth of its lifetime.
    return min(settings.retention_sweep_interval, settings.upload_expiry_hours * 360)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: GatewayState = app.state.gateway
    uploads = UploadStore(state.mongo[state.settings.mongo_db])
    await uploads.ensure_indexes()
    app.state.tus_uploads = uploads
    sweeper = asyncio.create_task(_sweep_forever(state, uploads))
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper


router = APIRouter(
    prefix="/v1/uploads",
    tags=["uploads"],
    route_class=TusRoute,
    dependencies=[Depends(tus_version)],
    lifespan=lifespan,
)


def _progress_headers(progress: Progress) -> dict[str, str]:
    upload = progress.upload
    headers = {"Upload-Offset": str(progress.offset), "Cache-Control": "no-store"}
    if progress.job_id is not None:
        headers["Location"] = f"/v1/jobs/{progress.job_id}"
        headers[JOB_ID_HEADER] = progress.job_id
    else:
        headers["Upload-Expires"] = http_date(upload.expires_at)
    return headers


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return parse_length(value, "Content-Length") if value is not None else None


@router.options("", status_code=204, include_in_schema=False)
@router.options("/{upload_id}", status_code=204, include_in_schema=False)
async def capabilities(state: State) -> Response:
    return Response(status_code=204, headers=capability_headers(state.settings.max_upload_bytes))


@router.post("", status_code=201, responses=error_responses(401, 412, 413, 415))
async def create_upload(
    request: Request,
    user: JobsWriter,
    state: State,
    uploads: Uploads,
    upload_length: Annotated[str | None, Header()] = None,
    upload_metadata: Annotated[str | None, Header()] = None,
    upload_defer_length: Annotated[str | None, Header()] = None,
) -> Response:
    """Create an upload (`Upload-Length`, optional `Upload-Metadata` with `filename` and any
    conversion option); the body may carry its first bytes (creation-with-upload)."""
    if upload_defer_length is not None:
        raise AppError("deferred lengths are not supported: send `Upload-Length`")
    length = parse_length(upload_length, "Upload-Length")
    metadata = parse_metadata(upload_metadata)
    declared = _declared_length(request)
    with_body = bool(declared) or request.headers.get("transfer-encoding") is not None
    if with_body:
        check_offset_body(request.headers.get("content-type"))
    upload = await tus_service.create(state, uploads, user, length, upload_metadata, metadata)
    headers = {"Location": f"/v1/uploads/{upload.id}"}
    if with_body:
        progress = await tus_service.receive(
            state, uploads, user, upload.id, 0, declared, request.stream()
        )
        headers |= _progress_headers(progress)
        headers["Location"] = f"/v1/uploads/{upload.id}"
    else:
        headers["Upload-Expires"] = http_date(upload.expires_at)
    return Response(status_code=201, headers=headers)


@router.head("/{upload_id}", responses=error_responses(401, 404, 410, 412))
async def upload_status(
    upload_id: str, user: JobsWriter, state: State, uploads: Uploads
) -> Response:
    progress = await tus_service.status(state, uploads, user, upload_id)
    headers = _progress_headers(progress) | {"Upload-Length": str(progress.upload.length)}
    if progress.upload.metadata:
        headers["Upload-Metadata"] = progress.upload.metadata
    return Response(status_code=200, headers=headers)


@router.patch(
    "/{upload_id}", status_code=204, responses=error_responses(401, 404, 409, 410, 412, 413, 415)
)
async def upload_bytes(
    upload_id: str,
    request: Request,
    user: JobsWriter,
    state: State,
    uploads: Uploads,
    upload_offset: Annotated[str | None, Header()] = None,
) -> Response:
    """Append the body (`application/offset+octet-stream`) at `Upload-Offset`. The answer to
    the last bytes carries `Location: /v1/jobs/{id}` and `Job-Id`."""
    check_offset_body(request.headers.get("content-type"))
    offset = parse_length(upload_offset, "Upload-Offset")
    progress = await tus_service.receive(
        state, uploads, user, upload_id, offset, _declared_length(request), request.stream()
    )
    return Response(status_code=204, headers=_progress_headers(progress))


@router.delete("/{upload_id}", status_code=204, responses=error_responses(401, 404, 412))
async def terminate_upload(
    upload_id: str, user: JobsWriter, state: State, uploads: Uploads
) -> Response:
    await tus_service.terminate(state, uploads, user, upload_id)
    return Response(status_code=204)


@router.post("/{upload_id}", include_in_schema=False)
async def method_override(
    upload_id: str,
    request: Request,
    user: JobsWriter,
    state: State,
    uploads: Uploads,
    x_http_method_override: Annotated[str | None, Header()] = None,
    upload_offset: Annotated[str | None, Header()] = None,
) -> Response:
    """For clients that cannot send PATCH, DELETE or HEAD: `X-HTTP-Method-Override`."""
    method = (x_http_method_override or "").upper()
    if method == "PATCH":
        return await upload_bytes(upload_id, request, user, state, uploads, upload_offset)
    if method == "DELETE":
        return await terminate_upload(upload_id, user, state, uploads)
    if method == "HEAD":
        return await upload_status(upload_id, user, state, uploads)
    return Response(status_code=405, headers={"Allow": "HEAD, PATCH, DELETE, OPTIONS"})
