"""Serving stored files: single `Range` requests and a safe `Content-Disposition`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from urllib.parse import quote

from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from shared.blobstore import BlobStore
from shared.errors import AppError, ErrorCode
from shared.pathsend import PATHSEND

# ASCII digits, at most 18 of them (beyond any file's size): longer numbers are no range we
# serve, and Python refuses to parse ones over 4,300 digits long.
_RANGE = re.compile(r"^bytes=([0-9]{0,18})-([0-9]{0,18})$")
_UNSAFE_ASCII = re.compile(r"[^A-Za-z0-9 ._()\-]")


class RangeNotSatisfiable(AppError):
    status_code = 416
    code = ErrorCode.INVALID_REQUEST


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback and the exact UTF-8 name (RFC 6266 / RFC 5987)."""
    fallback = _UNSAFE_ASCII.sub("_", filename).strip() or "download.mp3"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range asked for, None for the whole file; 416 if unsatisfiable."""
    if not header:
        return None
    if size == 0:
        # No byte of an empty file can be asked for; RFC 9110 lets us answer with all of it.
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(0) == "bytes=-":
        return None  # multi-range or malformed: RFC 9110 lets us answer with the whole file
    first, last = match.groups()
    if first == "":
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable("the requested range is empty")
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable("the requested range is outside the file")
    return start, end


async def blob_response(
    blobs: BlobStore,
    blob_id: str,
    *,
    filename: str,
    content_type: str,
    range_header: str | None,
    head: bool = False,
) -> Response:
    """The blob as a 200, or one range of it as a 206; for `head`, the same headers alone (what
    players and download managers probe with before they fetch)."""
    size = await blobs.size(blob_id)
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": content_disposition(filename),
        "Cache-Control": "private, no-store",
    }
    byte_range = parse_range(range_header, size)
    if head:
        if byte_range is not None:
            headers["Content-Range"] = f"bytes {byte_range[0]}-{byte_range[1]}/{size}"
        first, last = byte_range or (0, size - 1)
        headers["Content-Length"] = str(last - first + 1)
        status = 200 if byte_range is None else 206
        return Response(status_code=status, headers=headers, media_type=content_type)
    if byte_range is None:
        headers["Content-Length"] = str(size)
        body = blobs.read(blob_id) if size else _empty()
        local = blobs.local_path(blob_id)
        if local is not None and size:
            return LocalFileResponse(local, body, headers=headers, media_type=content_type)
        return StreamingResponse(body, 200, headers=headers, media_type=content_type)
    start, end = byte_range
    headers["Content-Length"] = str(end - start + 1)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        blobs.read(blob_id, start, end), 206, headers=headers, media_type=content_type
    )


class LocalFileResponse(StreamingResponse):
    """A whole file on this host's disk: handed to the server to send with sendfile(2) where it
    offers `http.response.pathsend` (our uvicorn protocol, shared.pathsend), else streamed from
    `body` like any other blob."""

    def __init__(
        self,
        path: Path,
        body: AsyncIterator[bytes],
        *,
        headers: Mapping[str, str],
        media_type: str,
    ) -> None:
        super().__init__(body, 200, headers=headers, media_type=media_type)
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if PATHSEND not in scope.get("extensions", {}):
            await super().__call__(scope, receive, send)
            return
        await self.body_iterator.aclose()  # type: ignore[attr-defined]
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send({"type": PATHSEND, "path": str(self.path)})


async def _empty() -> AsyncIterator[bytes]:
    return
    yield
