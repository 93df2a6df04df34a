"""services.gateway.uploads against hostile and broken forms, through the product's server.

The route under test is the gateway's upload in miniature: MultipartUpload feeding
FileBlobStore.write, with the shared error handlers, served by ServerProtocol on uvloop (so the
large bodies below are read by shared.bulkbody's thread, as in production).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.gateway.uploads import MAX_FIELDS, MultipartUpload
from shared.blobstore.file import FileBlobStore
from shared.http import install_error_handlers
from tests.support.asgi import served_as_product, serving_in_thread
from tests.support.net import free_port

BOUNDARY = "b0undaryXyz"
MIB = 1024 * 1024
# An MP3 as far as the sniffer can tell, and large enough for the bulk body path.
MEDIA = b"ID3\x04\x00\x00\x00\x00\x00\x00" + os.urandom(3 * MIB)


@dataclass
class Served:
    port: int
    root: Path

    def leftovers(self) -> list[Path]:
        return [p for p in self.root.rglob("*") if p.is_file()] if self.root.exists() else []


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    app = FastAPI()
    install_error_handlers(app)
    store = FileBlobStore(tmp_path / "blobs")
    count = 0

    @app.post("/up")
    async def up(request: Request) -> JSONResponse:
        nonlocal count
        count += 1
        upload = MultipartUpload(request, 64 * MIB)
        size = await store.write(f"{count:04d}-source", upload.file_chunks())
        return JSONResponse({"size": size, "fields": upload.fields}, status_code=202)

    port = free_port()
    with serving_in_thread(served_as_product(app, port)):
        yield Served(port, tmp_path / "blobs")


def part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"


def form(*parts: bytes, closed: bool = True) -> bytes:
    return b"".join(parts) + (f"--{BOUNDARY}--\r\n".encode() if closed else b"")


async def post(served: Served, body: bytes) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    try:
        head = (
            f"POST /up HTTP/1.1\r\nhost: test\r\ncontent-length: {len(body)}\r\n"
            f"content-type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        status_line = await asyncio.wait_for(reader.readline(), 60)
        headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
        length = next(
            int(line.split(b":")[1])
            for line in headers.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answer = json.loads(await asyncio.wait_for(reader.readexactly(length), 60))
        return int(status_line.split()[1]), answer
    finally:
        writer.close()


async def test_a_whole_form_is_stored(served: Served) -> None:
    status, answer = await post(served, form(part("bitrate", b"192"), part("file", MEDIA, "a")))
    assert status == 202, answer
    assert answer == {"size": len(MEDIA), "fields": {"bitrate": "192"}}
    [blob] = served.leftovers()
    assert blob.read_bytes() == MEDIA


@pytest.mark.parametrize("fields_after", [False, True])
async def test_an_empty_file_has_its_own_code(served: Served, fields_after: bool) -> None:
    parts = [part("file", b"", "empty.mp4")]
    if fields_after:
        parts.append(part("bitrate", b"192"))
    status, answer = await post(served, form(*parts))
    assert status == 422, answer
    assert answer == {"detail": "the file is empty", "code": "empty_file"}
    assert served.leftovers() == []


@pytest.mark.parametrize("cut", [len(MEDIA) // 2, len(MEDIA)])
async def test_a_form_cut_off_in_the_file_is_refused_and_nothing_stored(
    served: Served, cut: int
) -> None:
    # What a client with a short Content-Length sends: the file, whole or not, and no closing
    # boundary. Stored, it would be a truncated source behind a 202.
    status, answer = await post(served, form(part("file", MEDIA[:cut], "a"), closed=False)[:-2])
    assert status == 422
    assert answer["code"] == "invalid_request"
    assert "closing boundary" in answer["detail"]
    assert served.leftovers() == []


@pytest.mark.parametrize(
    "body",
    [
        # A part header longer than the parser allows.
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=file; filename=a\r\n".encode()
        + b"X-Pad: "
        + b"a" * 5000
        + b"\r\n\r\nID3\r\n"
        + f"--{BOUNDARY}--\r\n".encode(),
        # A header line without a colon.
        f"--{BOUNDARY}\r\nno colon here\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode(),
        # Something else where the first boundary belongs.
        b"this is not a multipart body at all" + b"x" * MIB,
    ],
    ids=["long-header", "no-colon", "no-boundary"],
)
async def test_malformed_forms_are_the_clients_error(
    served: Served, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        status, answer = await post(served, body)
    assert status == 422, answer
    assert answer["code"] == "invalid_request"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert served.leftovers() == []


async def test_the_number_of_fields_is_bounded(served: Served) -> None:
    # Thousands of tiny parts: each costs Python work on the event loop.
    body = form(*[part(f"f{i}", b"x") for i in range(5000)], part("file", MEDIA[:4096], "a"))
    status, answer = await post(served, body)
    assert status == 422
    assert answer["detail"] == "too many form fields"
    status, _ = await post(
        served, form(*[part(f"f{i}", b"x") for i in range(MAX_FIELDS)], part("file", MEDIA, "a"))
    )
    assert status == 202


async def test_a_field_sent_twice_is_refused(served: Served) -> None:
    body = form(part("bitrate", b"128"), part("bitrate", b"320"), part("file", MEDIA, "a"))
    status, answer = await post(served, body)
    assert status == 422
    assert answer["detail"] == "form field `bitrate` is sent more than once"
    # Nor can repeating one name get around the bound on fields.
    body = form(*[part("tag", b"x")] * 5000, part("file", MEDIA[:4096], "a"))
    status, _ = await post(served, body)
    assert status == 422


async def test_a_client_hanging_up_mid_upload_is_no_server_error(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    body = form(part("file", MEDIA, "a"))
    _, writer = await asyncio.open_connection("127.0.0.1", served.port)
    head = (
        f"POST /up HTTP/1.1\r\nhost: test\r\ncontent-length: {len(body)}\r\n"
        f"content-type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
    )
    with caplog.at_level(logging.INFO):
        writer.write(head.encode() + body[: 2 * MIB])
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()
        for _ in range(100):
            if any("went away" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
    assert any("went away" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert served.leftovers() == []
