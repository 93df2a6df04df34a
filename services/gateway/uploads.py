"""Streaming multipart uploads: the file part flows into the blob store chunk by chunk.

Starlette's `request.form()` spools the whole file before the route runs and has no total size
limit; here the body is parsed as it arrives, so memory stays flat, the size limit cuts the
request off the moment it is crossed, and the first bytes are sniffed before anything is stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from shared.errors import EmptyFile, TooLarge, Unprocessable, UnsupportedMedia
from shared.media.sniff import SNIFF_BYTES, sniff_container

# Plain form fields (options, tags) are small; a huge one is an attack, not an option.
MAX_FIELD_BYTES = 16 * 1024
# Counted as parts, not names: each part costs a few Python callbacks on the event loop, and
# a body of tiny parts would otherwise parse at ~5 MB/s, holding the loop for minutes.
MAX_FIELDS = 64


@dataclass
class _Part:
    name: str = ""
    filename: str | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


class UrlInsteadOfFile(Unprocessable):
    """The form named a `source_url` to import instead of sending a `file`."""

    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__("the form has a `source_url` and no `file`")
        self.fields = fields


class MultipartUpload:
    """Reads a `multipart/form-data` request with one file field named `file`.

    Iterate `file_chunks()` to receive the file's bytes; afterwards `fields` holds every other
    form field and `filename` the client's file name.
    """

    def __init__(
        self,
        request: Request,
        max_bytes: int,
        check_fields: Callable[[dict[str, str]], object] | None = None,
    ) -> None:
        content_type, params = parse_options_header(request.headers.get("content-type", ""))
        if content_type != b"multipart/form-data" or b"boundary" not in params:
            raise Unprocessable("send the video as multipart/form-data with a `file` field")
        declared = request.headers.get("content-length", "")
        if (
            declared.isascii()
            and declared.isdigit()
            and (len(declared) > 18 or int(declared) > max_bytes)
        ):
            raise _too_large(max_bytes)
        # The announced body size: an upper bound on the file's, counted against the storage
        # quota while the upload runs.
        self.declared_bytes = int(declared) if declared.isascii() and declared.isdigit() else None
        self._request = request
        self._max_bytes = max_bytes
        self._boundary = params[b"boundary"]
        # Called with the fields sent before the file, as the file starts: a bad option is
        # refused before a single byte of the file is stored.
        self._check_fields = check_fields
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.container: str | None = None
        self.received = 0

    async def file_chunks(self) -> AsyncIterator[bytes]:
        pending: list[bytes] = []
        current = _Part()
        header_name = bytearray()
        header_value = bytearray()
        in_file = False
        file_seen = False

        parts = 0
        ended = False

        def on_part_begin() -> None:
            nonlocal current, parts
            parts += 1
            if parts > MAX_FIELDS + 1:  # the file and MAX_FIELDS fields
                raise Unprocessable("too many form fields")
            current = _Part()

        def on_header_field(data: bytes, start: int, end: int) -> None:
            header_name.extend(data[start:end])

        def on_header_value(data: bytes, start: int, end: int) -> None:
            header_value.extend(data[start:end])

        def on_header_end() -> None:
            current.headers[bytes(header_name).lower()] = bytes(header_value)
            header_name.clear()
            header_value.clear()

        def on_headers_finished() -> None:
            nonlocal in_file, file_seen
            _, params = parse_options_header(current.headers.get(b"content-disposition", b""))
            current.name = params.get(b"name", b"").decode("utf-8", "replace")
            raw_filename = params.get(b"filename")
            if current.name == "file":
                if file_seen:
                    raise Unprocessable("send exactly one `file` field")
                file_seen = in_file = True
                current.filename = (raw_filename or b"").decode("utf-8", "replace")
                if self._check_fields is not None and self.fields:
                    self._check_fields(self.fields)

        def on_part_data(data: bytes, start: int, end: int) -> None:
            if in_file:
                pending.append(data[start:end])
                return
            current.data.extend(data[start:end])
            if len(current.data) > MAX_FIELD_BYTES:
                raise Unprocessable(f"form field `{current.name}` is too long")

        def on_part_end() -> None:
            nonlocal in_file
            if in_file:
                self.filename = current.filename
                in_file = False
                return
            if current.name in self.fields:
                raise Unprocessable(f"form field `{current.name}` is sent more than once")
            self.fields[current.name] = current.data.decode("utf-8", "replace")

        def on_end() -> None:
            nonlocal ended
            ended = True

        parser = MultipartParser(
            self._boundary,
            {
                "on_part_begin": on_part_begin,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_end": on_end,
            },
        )
        head = bytearray()
        sniffed = False
        async for chunk in self._request.stream():
            self.received += len(chunk)
            if self.received > self._max_bytes:
                raise _too_large(self._max_bytes)
            try:
                parser.write(chunk)
            except FormParserError:
                raise Unprocessable("the multipart form data is malformed") from None
            if not pending:
                continue
            data = b"".join(pending)
            pending.clear()
            if not sniffed:
                # Hold the start back until enough of it is here to recognise the container.
                head.extend(data)
                if len(head) < SNIFF_BYTES and in_file:
                    continue
                self._sniff(bytes(head))
                sniffed = True
                data = bytes(head)
                head.clear()
            yield data
        if not file_seen:
            if "source_url" in self.fields and ended:
                raise UrlInsteadOfFile(self.fields)
            raise Unprocessable("the form has no `file` field")
        if not ended:
            # python-multipart's finalize() checks nothing: a body cut off inside the file (a
            # short Content-Length, a chunked body ended early) would be stored as a whole file.
            raise Unprocessable("the multipart form data ends before its closing boundary")
        if not sniffed:
            if not head:
                raise EmptyFile()
            self._sniff(bytes(head))
            yield bytes(head)

    def _sniff(self, head: bytes) -> None:
        container = sniff_container(head)
        if container is None:
            raise UnsupportedMedia("the file is not an audio or video container")
        self.container = container


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"the upload is larger than the limit of {limit} bytes")
