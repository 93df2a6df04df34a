"""The HTTP protocol every service runs under uvicorn: httptools with our two byte paths and a
cap on the request head. With `shared/bulkbody.py` and `shared/pathsend.py`, the only module
allowed to touch uvicorn's private protocol classes (see the pin in `pyproject.toml`)."""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.bulkbody import BulkBodyProtocol
from shared.errors import ErrorCode
from shared.pathsend import PathsendProtocol

# The request line and headers together. httptools has no limit of its own (uvicorn's
# h11_max_incomplete_event_size applies to h11 only): a 200 MiB header was buffered whole.
MAX_HEAD_BYTES = 64 * 1024
# After a 431 the client's bytes are read and dropped this long before the socket closes:
# closing with bytes unread sends a reset, which can destroy the answer before the client reads it.
LINGER_SECONDS = 2.0

_TOO_LARGE = json.dumps(
    {
        "detail": f"the request line and headers exceed {MAX_HEAD_BYTES} bytes",
        "code": str(ErrorCode.HEADERS_TOO_LARGE),
    }
).encode()


class HeadLimitProtocol(HttpToolsProtocol):
    """Answers 431 once a request's head passes MAX_HEAD_BYTES, so the parser never holds more
    than that plus one read; then drops what the client still sends until it closes."""

    _in_head = False
    _head_bytes = 0
    _refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if not self._in_head or self.transport.is_closing():
            return
        # Still inside the head after this read: all of it (but a pipelined predecessor's
        # tail) was head.
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._in_head = False
            self._refused = True
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\n"
                b"content-length: " + str(len(_TOO_LARGE)).encode() + b"\r\n"
                b"connection: close\r\n\r\n" + _TOO_LARGE
            )
            if self.transport.can_write_eof():
                self.transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_SECONDS, self.transport.close)


class ServerProtocol(HeadLimitProtocol, PathsendProtocol, BulkBodyProtocol):
    """Downloads of whole files with sendfile(2) (shared.pathsend), large request bodies read
    by a thread in 1 MiB blocks (shared.bulkbody), and a capped request head."""
