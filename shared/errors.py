"""One exception hierarchy for every service, each error carrying a stable machine `code`."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    NOT_MEDIA = "not_media"
    TOO_LARGE = "too_large"
    NO_AUDIO_STREAM = "no_audio_stream"
    UNREADABLE_MEDIA = "unreadable_media"
    CONVERSION_FAILED = "conversion_failed"
    TIMEOUT = "timeout"
    NOT_READY = "not_ready"
    NOT_FOUND = "not_found"
    LINK_EXPIRED = "link_expired"
    OUTPUT_EXPIRED = "output_expired"
    LINK_INVALID = "link_invalid"
    EMAIL_TAKEN = "email_taken"
    WEAK_PASSWORD = "weak_password"
    INVALID_REQUEST = "invalid_request"
    INVALID_OPTIONS = "invalid_options"
    INVALID_CREDENTIALS = "invalid_credentials"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    INVALID_TOKEN = "invalid_token"
    NOT_AUTHENTICATED = "not_authenticated"
    BROKER_UNAVAILABLE = "broker_unavailable"
    DATABASE_UNAVAILABLE = "database_unavailable"
    AUTH_UNAVAILABLE = "auth_unavailable"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"
    CANCELLED = "cancelled"
    TOO_MANY_ACTIVE_JOBS = "too_many_active_jobs"
    STORAGE_QUOTA_EXCEEDED = "storage_quota_exceeded"
    DAILY_LIMIT = "daily_limit"
    TOO_MANY_UPLOADS = "too_many_uploads"
    UPLOAD_TIMEOUT = "upload_timeout"
    HEADERS_TOO_LARGE = "headers_too_large"
    EMPTY_FILE = "empty_file"
    SOURCE_TOO_LONG = "source_too_long"
    OUTPUT_TOO_LARGE = "output_too_large"
    INSUFFICIENT_STORAGE = "insufficient_storage"
    URL_FORBIDDEN = "url_forbidden"
    URL_FETCH_FAILED = "url_fetch_failed"
    FILE_TOO_LARGE = "file_too_large"
    # tus (resumable uploads)
    TUS_VERSION_UNSUPPORTED = "tus_version_unsupported"
    OFFSET_MISMATCH = "offset_mismatch"
    UPLOAD_LOCKED = "upload_locked"
    UPLOAD_EXPIRED = "upload_expired"
    UNSUPPORTED_CONTENT_TYPE = "unsupported_content_type"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    REGISTRATION_CLOSED = "registration_closed"
    INVITE_REQUIRED = "invite_required"
    ACCOUNT_DISABLED = "account_disabled"
    ADMIN_REQUIRED = "admin_required"
    ALREADY_VERIFIED = "already_verified"


class AppError(Exception):
    """An error a client may see: a human `detail`, a stable `code` and an HTTP status."""

    status_code: int = 400
    code: ErrorCode = ErrorCode.INVALID_REQUEST
    # Seconds after which asking again may succeed: sent in the body and as `Retry-After`.
    retry_after: int | None = None

    def __init__(self, detail: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    @property
    def headers(self) -> dict[str, str] | None:
        """Headers the HTTP answer carries besides the body."""
        return None if self.retry_after is None else {"Retry-After": str(self.retry_after)}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.detail, "code": str(self.code)}
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


class NotFound(AppError):
    status_code = 404
    code = ErrorCode.NOT_FOUND


class Conflict(AppError):
    status_code = 409


class Forbidden(AppError):
    status_code = 403
    code = ErrorCode.ADMIN_REQUIRED


class Gone(AppError):
    status_code = 410
    code = ErrorCode.LINK_EXPIRED


class Unauthorized(AppError):
    status_code = 401
    code = ErrorCode.NOT_AUTHENTICATED


class TooLarge(AppError):
    status_code = 413
    code = ErrorCode.TOO_LARGE


class UnsupportedMedia(AppError):
    status_code = 415
    code = ErrorCode.NOT_MEDIA


class Unprocessable(AppError):
    status_code = 422
    code = ErrorCode.INVALID_REQUEST


class EmptyFile(Unprocessable):
    code = ErrorCode.EMPTY_FILE

    def __init__(self) -> None:
        super().__init__("the file is empty")


class Unavailable(AppError):
    status_code = 503
    code = ErrorCode.SERVICE_UNAVAILABLE


class MediaError(AppError):
    """A conversion failure caused by the input file, reported on the job rather than over HTTP."""

    status_code = 422
    code = ErrorCode.UNREADABLE_MEDIA


class LimitReached(AppError):
    """A per-account limit refused the request: 429 with `Retry-After` when waiting helps, 403
    when the user must free something first."""

    def __init__(
        self, detail: str, *, code: ErrorCode, status_code: int, retry_after: int | None = None
    ) -> None:
        super().__init__(detail, code=code)
        self.status_code = status_code
        self.retry_after = retry_after


class UploadTimeout(AppError):
    status_code = 408
    code = ErrorCode.UPLOAD_TIMEOUT


class InsufficientStorage(AppError):
    """Too little free space under the blob store to take more bytes."""

    status_code = 507
    code = ErrorCode.INSUFFICIENT_STORAGE
