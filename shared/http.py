"""What every FastAPI service shares: the error mapping and the health endpoints."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import ConnectionFailure, ExecutionTimeout, NetworkTimeout, PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.blobstore.base import BlobNotFound
from shared.errors import AppError, ErrorCode

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[None]]

_STATUS_CODES = {
    401: ErrorCode.NOT_AUTHENTICATED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.INVALID_REQUEST,
    413: ErrorCode.TOO_LARGE,
}


def error_response(
    status: int, detail: str, code: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Map every error to `{detail, code}` once, so no route builds error bodies by hand."""

    @app.exception_handler(AppError)
    async def app_error(_: Request, exc: AppError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)

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
        if isinstance(exc, ConnectionFailure | ExecutionTimeout | NetworkTimeout):
            log.warning("database unavailable: %s", exc)
            return error_response(
                503, "the database is unavailable", str(ErrorCode.DATABASE_UNAVAILABLE)
            )
        log.exception("database error", exc_info=exc)
        return error_response(500, "internal error", str(ErrorCode.INTERNAL_ERROR))

    @app.exception_handler(BlobNotFound)
    async def blob_missing(_: Request, exc: BlobNotFound) -> JSONResponse:
        return error_response(404, "the file no longer exists", str(ErrorCode.NOT_FOUND))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal error", str(ErrorCode.INTERNAL_ERROR))


def install_health_routes(app: FastAPI, checks: dict[str, ReadinessCheck]) -> None:
    """`/healthz` says the process runs; `/readyz` that each dependency answers."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
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
