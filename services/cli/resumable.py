"""`convert`'s uploads over tus (`/v1/uploads`): a dropped connection is retried from the
server's offset, and an upload a run left unfinished (Ctrl-C, a crash, a network gone for
good) is resumed by the next run of the same file against the same server.

Unfinished uploads are remembered in `uploads.json` beside the credentials, by server and by
the file's absolute path, size and modification time: a file changed since is uploaded anew.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from services.cli.credentials import config_dir

if TYPE_CHECKING:
    from services.cli.convert import FileJob, Reporter, Session

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"
READ_BLOCK = 1024 * 1024
# Waits before each new attempt after a dropped connection or a busy server.
RETRY_DELAYS = (0.0, 1.0, 3.0, 5.0, 10.0)
RETRY_STATUSES = frozenset({409, 423, 429, 500, 502, 503, 504})
_store_lock = asyncio.Lock()


class Refused(RuntimeError):
    """The server refused the upload for good (a bad file, a limit): not retried."""


class NoResumableUploads(RuntimeError):
    """The server predates `/v1/uploads`: the caller sends the file in one request instead."""


class _Retry(RuntimeError):
    """Worth another try once the server's offset is known again."""


def _store_path() -> Path:
    return config_dir() / "uploads.json"


def _read() -> dict[str, str]:
    try:
        stored = json.loads(_store_path().read_text())
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def _write(stored: dict[str, str]) -> None:
    path = _store_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(stored))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: this run still uploads, a later one just starts over


async def _remembered(key: str) -> str | None:
    async with _store_lock:
        return (await asyncio.to_thread(_read)).get(key)


async def _remember(key: str, url: str | None) -> None:
    def update() -> None:
        stored = _read()
        if url is None:
            stored.pop(key, None)
        else:
            stored[key] = url
        _write(stored)

    async with _store_lock:
        await asyncio.to_thread(update)


def _metadata(fields: Mapping[str, str]) -> str:
    return ",".join(
        f"{name} {base64.b64encode(value.encode()).decode()}" for name, value in fields.items()
    )


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return f"the server answered {response.status_code}"


async def _request(
    session: Session, method: str, url: str, headers: Mapping[str, str] | None = None
) -> httpx.Response:
    """A request without a body, with the run's token (renewed once if refused)."""
    for attempt in range(2):
        token = session.token
        response = await session.client.request(
            method, url, headers={**session.headers(), **TUS, **(headers or {})}
        )
        if response.status_code != 401 or attempt:
            break
        await session.renew(token)
    return response


async def _file_from(path: Path, offset: int, on_sent: Any) -> AsyncIterator[bytes]:
    sent = offset
    with path.open("rb") as f:
        await asyncio.to_thread(f.seek, offset)
        while chunk := await asyncio.to_thread(f.read, READ_BLOCK):
            sent += len(chunk)
            on_sent(sent)
            yield chunk


async def upload_resumable(
    session: Session, item: FileJob, reporter: Reporter, fields: Mapping[str, str]
) -> None:
    """Upload `item.source` (resuming an unfinished upload of it) and set `item.job_id`.

    Raises NoResumableUploads, before anything is shown or sent, when the server has no tus.
    """
    stat = await asyncio.to_thread(item.source.stat)
    key = json.dumps([session.server, str(item.source.resolve()), stat.st_size, stat.st_mtime_ns])
    url = await _remembered(key)
    state = await _status(session, url) if url else None
    if url is None or state is None:
        url = await _create(session, item, stat.st_size, fields)
        await _remember(key, url)
        state = (0, None)
    reporter.add(item, stat.st_size)
    reporter.state(item, "uploading")
    offset, job_id = state
    reporter.advance(item, offset)
    attempt = 0
    while job_id is None:
        try:
            offset, job_id = await _patch(session, url, item, offset, reporter)
            attempt = 0
        except (httpx.TransportError, _Retry):
            if attempt >= len(RETRY_DELAYS):
                raise
            await asyncio.sleep(RETRY_DELAYS[attempt])
            attempt += 1
            state = await _status(session, url)
            if state is None:
                await _remember(key, None)
                raise Refused("the upload expired on the server; run again") from None
            offset, job_id = state
        except Refused:
            await _remember(key, None)
            raise
    await _remember(key, None)
    item.job_id = job_id
    reporter.state(item, "queued")


async def _patch(
    session: Session, url: str, item: FileJob, offset: int, reporter: Reporter
) -> tuple[int, str | None]:
    token = session.token
    response = await session.client.patch(
        url,
        headers={**session.headers(), **TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS},
        content=_file_from(item.source, offset, lambda n: reporter.advance(item, n)),
        timeout=httpx.Timeout(60, write=None),
    )
    if response.status_code == 401:
        await session.renew(token)
        raise _Retry("the access token expired")
    if response.status_code in RETRY_STATUSES:
        raise _Retry(_detail(response))
    if response.status_code != 204:
        raise Refused(_detail(response))
    return int(response.headers["Upload-Offset"]), response.headers.get("Job-Id")


async def _create(session: Session, item: FileJob, size: int, fields: Mapping[str, str]) -> str:
    response = await _request(
        session,
        "POST",
        "/v1/uploads",
        headers={
            "Upload-Length": str(size),
            "Upload-Metadata": _metadata({"filename": item.source.name, **fields}),
        },
    )
    if response.status_code in (404, 405):
        raise NoResumableUploads(_detail(response))
    if response.status_code != 201:
        raise Refused(_detail(response))
    return response.headers["Location"]


async def _status(session: Session, url: str) -> tuple[int, str | None] | None:
    """The server's offset and, once finished, the job; None when it no longer has it."""
    response = await _request(session, "HEAD", url)
    if response.status_code in (404, 410):
        return None
    if response.status_code != 200:
        raise Refused(f"the server answered {response.status_code}")
    return int(response.headers["Upload-Offset"]), response.headers.get("Job-Id")
