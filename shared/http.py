"""What every FastAPI service shares: the error mapping and the health endpoints."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.blobstore.base import BlobNotFound
from shared.errors import AppError, ErrorCode
from shared.logs import correlation_id, new_correlation_id
from shared.metrics import MetricsMiddleware, metrics_endpoint
from shared.mongo import DATABASE_OUTAGES

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")

_STATUS_CODES = {
    401: ErrorCode.NOT_AUTHENTICATED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_REQUEST,
    413: ErrorCode.TOO_LARGE,
}


class FieldError(BaseModel):
    field: str
    reason: str


class ErrorBody(BaseModel):
    """Every error answer: a human `detail`, a stable `code`, per-field `errors` on 422s."""

    detail: str
    code: str
    errors: list[FieldError] | None = None
    retry_after: int | None = None


_DESCRIPTIONS = {
    400: "malformed request (e.g. a body that is not JSON)",
    401: "missing, invalid or expired access token",
    404: "no such resource (or not yours)",
    409: "conflict (e.g. `email_taken`, `not_ready`)",
    410: "expired (`link_expired`, `output_expired`)",
    413: "upload larger than MAX_UPLOAD_BYTES (`too_large`)",
    415: "not an audio/video container (`not_media`)",
    416: "range not satisfiable",
    422: "invalid request or options, per field; `empty_file` for a file of no bytes",
    403: "refused (e.g. `storage_quota_exceeded`)",
    408: "the upload took longer than UPLOAD_DEADLINE_SECONDS (`upload_timeout`)",
    429: "too many attempts or a per-account limit (`too_many_active_jobs`, `daily_limit`,"
    " `too_many_uploads`); ask again after `retry_after` seconds (also in Retry-After)",
    503: "a dependency is unavailable (`broker_unavailable`, `database_unavailable`, ...)",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the `{detail, code}` error body."""
    return {
        status: {"model": ErrorBody, "description": _DESCRIPTIONS.get(status, "error")}
        for status in (400, *statuses, 422, 503)
    }


def error_response(
    status: int, detail: str, code: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to `{detail, code}` once, so no route builds error bodies by hand."""

    @app.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {
                "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                "reason": e.get("msg", ""),
            }
            for e in exc.errors()
        ]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors) or "invalid request"
        return JSONResponse(
            {"detail": detail, "code": str(ErrorCode.INVALID_REQUEST), "errors": errors},
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, ErrorCode.INVALID_REQUEST)
        return error_response(exc.status_code, str(exc.detail), str(code), exc.headers)

    @app.exception_handler(PyMongoError)
    async def database_error(_: Request, exc: PyMongoError) -> JSONResponse:
        if isinstance(exc, DATABASE_OUTAGES):
            log.warning("database unavailable: %s", exc)
            return error_response(
                503, "the database is unavailable", str(ErrorCode.DATABASE_UNAVAILABLE)
            )
        log.exception("database error", exc_info=exc)
        return error_response(500, "internal error", str(ErrorCode.INTERNAL_ERROR))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, _: ClientDisconnect) -> JSONResponse:
        # Nobody reads this answer; the point is that a client hanging up mid-upload is routine
        # (the partial upload is already removed), not a server error with a traceback.
        log.info("client went away before its request body ended: %s", request.url.path)
        return error_response(400, "the request body ended early", str(ErrorCode.INVALID_REQUEST))

    @app.exception_handler(BlobNotFound)
    async def blob_missing(_: Request, exc: BlobNotFound) -> JSONResponse:
        return error_response(404, "the file no longer exists", str(ErrorCode.NOT_FOUND))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal error", str(ErrorCode.INTERNAL_ERROR))


class RequestIdMiddleware:
    """Takes the caller's `X-Request-ID` (or makes one), logs under it and echoes it back."""

    # No server span here: FastAPI opens one per request by itself once OpenTelemetry is set up
    # (shared.tracing), continuing a caller's `traceparent`; events published while handling the
    # request carry that span's context.
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _REQUEST_ID.match(sent) else new_correlation_id()
        correlation_id.set(request_id)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _forwarded(request: Request) -> bool:
    """Whether a reverse proxy passed the request on: probes and Prometheus reach a service
    directly, so through the proxy (the public's way in) /metrics and /readyz are not served,
    whatever the proxy's own rules say."""
    return "x-forwarded-for" in request.headers or "forwarded" in request.headers


def _not_public() -> JSONResponse:
    return error_response(404, "not found", str(ErrorCode.NOT_FOUND))


def install_operations(
    app: FastAPI, checks: dict[str, ReadinessCheck], service: str | None = None
) -> None:
    """`/healthz` (the process runs), `/readyz` (each dependency answers), `/metrics`, and
    request ids and metrics on every request."""

    async def metrics(request: Request) -> Response:
        if _forwarded(request):
            return _not_public()
        return await metrics_endpoint(request)

    app.add_route("/metrics", metrics, include_in_schema=False)
    app.add_middleware(MetricsMiddleware, service=service or app.title)
    app.add_middleware(RequestIdMiddleware)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        if _forwarded(request):
            return _not_public()
        results: dict[str, str] = {}
        ok = True
        for name, check in checks.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:  # a readiness probe reports, it never raises
                ok = False
                results[name] = f"unavailable: {type(exc).__name__}"
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": results},
            status_code=200 if ok else 503,
        )
