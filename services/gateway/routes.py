"""The job, download and notification endpoints of the public API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from services.gateway import imports, service
from services.gateway.deps import JobsReader, JobsWriter, State
from services.gateway.downloads import blob_response
from services.gateway.quota import Usage, usage_of
from services.gateway.routes_admin import require_active_owner
from services.gateway.schemas import JobPage
from services.gateway.uploads import MultipartUpload, UrlInsteadOfFile
from shared.errors import Conflict, ErrorCode, Gone, NotFound
from shared.http import error_responses
from shared.jobs import Job, JobStatus, utcnow
from shared.links import sign_download_token, verify_download_token
from shared.logs import correlation_id as current_correlation_id
from shared.logs import new_correlation_id
from shared.notices import MarkRead, NotificationList
from shared.options import ConversionOptions

router = APIRouter(prefix="/v1", tags=["jobs"])

# Signed links in job views live briefly: long enough to play or download, short enough that a
# leaked page is harmless soon. The emailed link has its own, longer lifetime.
STREAM_LINK_TTL = 3600


def view(state: State, job: Job) -> dict[str, Any]:
    """The public job, with a short-lived `stream_url` for an `<audio>` element (which cannot
    send a bearer token) once it is done."""
    stream_url = None
    if job.downloadable:
        token = sign_download_token(state.settings.link_key, job.id, STREAM_LINK_TTL)
        stream_url = f"/v1/downloads/{token}"
    return job.public_view(stream_url)


_UPLOAD_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}},
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["source_url"],
                    "properties": {"source_url": {"type": "string", "format": "uri"}},
                    "additionalProperties": True,
                }
            },
        },
    }
}


@router.post(
    "/jobs",
    status_code=202,
    openapi_extra=_UPLOAD_DOC,
    responses=error_responses(401, 403, 408, 413, 415, 429),
)
async def create_job(request: Request, user: JobsWriter, state: State) -> JSONResponse:
    """Upload a video (multipart `file`), or import one from a URL (JSON `source_url`)."""
    correlation_id = current_correlation_id.get() or new_correlation_id()
    if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
        body = await imports.read_import_body(request)
        job = await imports.submit_import(state, user, body, correlation_id)
        return JSONResponse(
            job.public_view(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"}
        )
    upload = MultipartUpload(
        request, state.settings.max_upload_bytes, check_fields=ConversionOptions.from_form
    )
    try:
        job = await service.submit_job(state, user, upload, correlation_id)
    except UrlInsteadOfFile as form:
        job = await imports.submit_import(state, user, dict(form.fields), correlation_id)
    return JSONResponse(
        job.public_view(), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"}
    )


@router.get("/usage", tags=["account"], responses=error_responses(401))
async def usage(user: JobsReader, state: State) -> Usage:
    """What my account stores and runs, beside its limits (a limit of 0 is unlimited)."""
    return await usage_of(state, user.user_id)


@router.get("/jobs", responses=error_responses(401))
async def list_jobs(
    user: JobsReader,
    state: State,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobPage:
    jobs, next_cursor = await state.jobs.list_for_user(user.user_id, limit, cursor)
    return JobPage(items=[view(state, j) for j in jobs], next_cursor=next_cursor)


@router.get("/jobs/{job_id}", responses=error_responses(401, 404))
async def get_job(job_id: str, user: JobsReader, state: State) -> dict[str, Any]:
    return view(state, await state.jobs.get_owned(job_id, user.user_id))


@router.delete("/jobs/{job_id}", status_code=204, responses=error_responses(401, 404))
async def delete_job(job_id: str, user: JobsWriter, state: State) -> Response:
    await service.cancel_or_delete(state, user, job_id)
    return Response(status_code=204)


async def _download(state: State, job: Job, range_header: str | None, request: Request) -> Response:
    if job.status is JobStatus.COMPLETED and (job.output_expired or _past(job.expires_at)):
        raise Gone("this file has expired and was deleted", code=ErrorCode.OUTPUT_EXPIRED)
    if job.status is not JobStatus.COMPLETED or job.output is None or not job.output_blob_id:
        raise Conflict("the conversion has not finished", code=ErrorCode.NOT_READY)
    return await blob_response(
        state.blobs,
        job.output_blob_id,
        filename=job.output.filename,
        content_type=job.output.content_type,
        range_header=range_header,
        head=request.method == "HEAD",
    )


def _past(moment: datetime | None) -> bool:
    return moment is not None and moment <= utcnow()


@router.get(
    "/jobs/{job_id}/download",
    response_class=Response,
    responses={
        200: {"content": {"audio/mpeg": {}}, "description": "the audio file"},
        206: {"content": {"audio/mpeg": {}}, "description": "a byte range of it"},
        **error_responses(401, 404, 409, 410, 416),
    },
)
async def download_job(
    job_id: str,
    request: Request,
    user: JobsReader,
    state: State,
    range_header: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    job = await state.jobs.get_owned(job_id, user.user_id)
    return await _download(state, job, range_header, request)


# HEAD beside GET (players and download managers probe with it), kept out of the schema: one
# function under two methods would give the OpenAPI document a duplicate operation id.
router.add_api_route(
    "/jobs/{job_id}/download",
    download_job,
    methods=["HEAD"],
    response_class=Response,
    include_in_schema=False,
)


@router.get(
    "/downloads/{token}",
    tags=["downloads"],
    response_class=Response,
    responses={
        200: {"content": {"audio/mpeg": {}}, "description": "the audio file"},
        206: {"content": {"audio/mpeg": {}}, "description": "a byte range of it"},
        **error_responses(404, 409, 410, 416),
    },
)
async def download_by_link(
    token: str,
    request: Request,
    state: State,
    range_header: Annotated[str | None, Header(alias="range")] = None,
) -> Response:
    job_id = verify_download_token(state.settings.link_key, token)
    job = await state.jobs.get(job_id)
    if job is None:
        raise NotFound("this file no longer exists")
    await require_active_owner(state, job.user_id)
    return await _download(state, job, range_header, request)


router.add_api_route(
    "/downloads/{token}",
    download_by_link,
    methods=["HEAD"],
    response_class=Response,
    include_in_schema=False,
)


@router.get(
    "/notifications",
    tags=["notifications"],
    response_model=NotificationList,
    responses=error_responses(401),
)
async def notifications(request: Request, user: JobsReader, state: State) -> Response:
    upstream = await state.notifications.request(
        "GET",
        "/v1/notifications",
        headers={"authorization": request.headers.get("authorization", "")},
        params=dict(request.query_params),
    )
    return Response(
        upstream.content, upstream.status_code, media_type=upstream.headers.get("content-type")
    )


@router.post(
    "/notifications/read",
    status_code=204,
    tags=["notifications"],
    responses=error_responses(401),
)
async def mark_notifications_read(
    body: MarkRead, request: Request, user: JobsReader, state: State
) -> Response:
    """Mark notifications read: the listed `ids`, or all of them when `ids` is omitted."""
    upstream = await state.notifications.request(
        "POST",
        "/v1/notifications/read",
        headers={"authorization": request.headers.get("authorization", "")},
        json=body.model_dump(),
    )
    return Response(
        upstream.content or None,
        upstream.status_code,
        media_type=upstream.headers.get("content-type"),
    )
