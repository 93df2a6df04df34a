"""The tus 1.0.0 wire format, free of storage: header names, parsing and the headers every
answer carries (https://tus.io/protocols/resumable-upload)."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from email.utils import format_datetime

from shared.errors import AppError, ErrorCode

TUS_VERSION = "1.0.0"
EXTENSIONS = ("creation", "creation-with-upload", "termination", "expiration")
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
# Names the job created by the last byte; `Location` says where it is.
JOB_ID_HEADER = "Job-Id"
# Upload-Metadata is echoed back on HEAD: bounded, so a header cannot grow without limit.
MAX_METADATA_BYTES = 8 * 1024
# Keys the reference clients and Uppy send to describe the file; not conversion options.
DESCRIPTIVE_KEYS = frozenset({"filetype", "name", "type", "relativePath"})

_DIGITS = re.compile(r"[0-9]{1,19}")
_KEY = re.compile(r"[!-~]+")  # printable ASCII without space; commas are split on already


class VersionUnsupported(AppError):
    status_code = 412
    code = ErrorCode.TUS_VERSION_UNSUPPORTED


class OffsetMismatch(AppError):
    status_code = 409
    code = ErrorCode.OFFSET_MISMATCH


class UploadLocked(AppError):
    status_code = 423
    code = ErrorCode.UPLOAD_LOCKED


class WrongContentType(AppError):
    status_code = 415
    code = ErrorCode.UNSUPPORTED_CONTENT_TYPE


def tus_headers() -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION}


def capability_headers(max_size: int) -> dict[str, str]:
    return {
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Max-Size": str(max_size),
    }


def check_version(value: str | None) -> None:
    if value != TUS_VERSION:
        raise VersionUnsupported(
            f"send `Tus-Resumable: {TUS_VERSION}` (got {value!r}); this server speaks tus "
            f"{TUS_VERSION} only"
        )


def parse_length(value: str | None, name: str) -> int:
    """A non-negative integer header; 400 when missing or malformed."""
    if value is None or not _DIGITS.fullmatch(value.strip()):
        raise AppError(f"`{name}` must be a non-negative integer")
    return int(value.strip())


def parse_metadata(value: str | None) -> dict[str, str]:
    """`Upload-Metadata`: comma-separated `key base64value` pairs (the value may be absent)."""
    if value is None or not value.strip():
        return {}
    if len(value) > MAX_METADATA_BYTES:
        raise AppError(f"`Upload-Metadata` is longer than {MAX_METADATA_BYTES} bytes")
    pairs: dict[str, str] = {}
    for item in value.split(","):
        key, _, encoded = item.strip().partition(" ")
        if not _KEY.fullmatch(key):
            raise AppError("`Upload-Metadata` has an empty or malformed key")
        if key in pairs:
            raise AppError(f"`Upload-Metadata` repeats the key `{key}`")
        try:
            pairs[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AppError(f"`Upload-Metadata` value of `{key}` is not base64 of UTF-8") from None
    return pairs


def split_metadata(metadata: dict[str, str]) -> tuple[str | None, dict[str, str]]:
    """The file name, and the conversion options as form-like fields."""
    options = {
        key: value
        for key, value in metadata.items()
        if key != "filename" and key not in DESCRIPTIVE_KEYS
    }
    return metadata.get("filename"), options


def check_offset_body(content_type: str | None) -> None:
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != OFFSET_CONTENT_TYPE:
        raise WrongContentType(f"send the bytes as `Content-Type: {OFFSET_CONTENT_TYPE}`")


def http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)
