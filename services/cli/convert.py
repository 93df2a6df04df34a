"""`video2mp3 convert FILE...`: upload, follow the conversion live, download the MP3s."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.text import Text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from services.cli.credentials import LoginError, access_token
from services.cli.resumable import NoResumableUploads, upload_resumable
from shared.events import ClientEvent, EventType
from shared.jobs import JobError, JobStatus
from shared.options import ConversionOptions, InvalidOptions

READ_BLOCK = 1024 * 1024
# What a poll that finds a job finished stands for: the event the live socket would have sent.
FINAL_EVENTS = {
    JobStatus.COMPLETED: EventType.JOB_COMPLETED,
    JobStatus.FAILED: EventType.JOB_FAILED,
    JobStatus.CANCELLED: EventType.JOB_CANCELLED,
}
# Uploads at once: more only share the same link, and past httpx's 100 connections the rest
# waited for the pool and failed.
UPLOADS_AT_ONCE = 4
LIVE_OPEN_TIMEOUT = 10.0
# Seconds between looks at the job document, with and without the live socket.
POLL_WITH_LIVE = 10.0
POLL_WITHOUT_LIVE = 2.0
# Failed looks at a job in a row before its file is given up (the job itself goes on).
POLL_FAILURES_MAX = 10


class Session:
    """The access token a run uses, renewed when the server refuses it: a token lasts 15
    minutes by default, and a run of many or long files can last longer."""

    def __init__(self, client: httpx.AsyncClient, server: str, token: str) -> None:
        self.client = client
        self.server = server
        self.token = token
        self._renewing = asyncio.Lock()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def renew(self, refused: str) -> None:
        async with self._renewing:
            if self.token == refused:  # else another task renewed it already
                self.token = await access_token(self.client, self.server)

    async def get(self, path: str) -> httpx.Response:
        token = self.token
        response = await self.client.get(path, headers=self.headers())
        if response.status_code == 401:
            await self.renew(token)
            response = await self.client.get(path, headers=self.headers())
        return response


@dataclass
class FileJob:
    source: Path
    target: Path
    job_id: str | None = None
    status: str = "waiting"
    error: str | None = None
    events: asyncio.Queue[ClientEvent] = field(default_factory=asyncio.Queue)
    poll_failures: int = 0


class JobView(BaseModel):
    """What the CLI reads of a job (`GET /v1/jobs/{id}`)."""

    status: JobStatus
    progress: int = 0
    error: JobError | None = None


class TransferColumn(ProgressColumn):
    """Bytes and speed while a file uploads; nothing once its bar counts percent of the
    conversion, where bytes would read `42/100 bytes`."""

    def __init__(self) -> None:
        super().__init__()
        self.size = DownloadColumn()
        self.speed = TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        if not task.fields.get("bytes"):
            return Text()
        return Text.assemble(self.size.render(task), " ", self.speed.render(task))


class Reporter:
    """Progress bars on a terminal, one line per state change otherwise."""

    def __init__(self, tty: bool, console: Console | None = None) -> None:
        self.tty = tty
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TransferColumn(),
            console=self.console,
            disable=not tty,
        )
        self.tasks: dict[Path, TaskID] = {}

    def add(self, item: FileJob, size: int) -> None:
        self.tasks[item.source] = self.progress.add_task(
            f"{item.source.name}: upload", total=size, bytes=True
        )

    def advance(self, item: FileJob, done: int) -> None:
        self.progress.update(self.tasks[item.source], completed=done)

    def state(self, item: FileJob, state: str, percent: int | None = None) -> None:
        changed = item.status != state
        if not changed and percent is None:
            return
        item.status = state
        if self.tty:
            task = self.tasks[item.source]
            if percent is not None:
                self.progress.update(
                    task,
                    description=f"{item.source.name}: {state}",
                    total=100,
                    completed=percent,
                    bytes=False,
                )
            else:
                self.progress.update(task, description=f"{item.source.name}: {state}")
        elif changed:
            # Without a terminal: one line per state change, not per percent.
            print(f"{item.source.name}: {state}", flush=True)


def multipart_body(
    path: Path, boundary: str, on_sent: Any, fields: Mapping[str, str] | None = None
) -> AsyncIterator[bytes]:
    async def body() -> AsyncIterator[bytes]:
        # Option fields first: the server checks them before it stores a byte of the file.
        for field_name, value in (fields or {}).items():
            yield (
                (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"\r\n\r\n'
                ).encode()
                + value.encode()
                + b"\r\n"
            )
        name = path.name.replace('"', "_").replace("\r", "_").replace("\n", "_")
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        sent = 0
        with path.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, READ_BLOCK):
                sent += len(chunk)
                on_sent(sent)
                yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    return body()


async def upload(
    session: Session, item: FileJob, reporter: Reporter, fields: Mapping[str, str]
) -> None:
    boundary = uuid.uuid4().hex
    size = (await asyncio.to_thread(item.source.stat)).st_size
    reporter.add(item, size)
    reporter.state(item, "uploading")

    async def post() -> httpx.Response:
        return await session.client.post(
            "/v1/jobs",
            content=multipart_body(
                item.source, boundary, lambda n: reporter.advance(item, n), fields
            ),
            headers={
                **session.headers(),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            timeout=httpx.Timeout(60, write=None),
        )

    token = session.token
    response = await post()
    if response.status_code == 401:
        await session.renew(token)
        response = await post()
    if response.status_code != 202:
        raise RuntimeError(_detail(response))
    item.job_id = response.json()["id"]
    reporter.state(item, "queued")


async def live_credentials(session: Session, url: str) -> tuple[str, dict[str, str]]:
    """The socket's URL with a single-use ticket; a server without tickets gets the token in a
    header instead (never in the URL, which proxies log)."""
    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
        response = await session.client.post("/v1/ws-ticket", headers=session.headers())
        if response.status_code == 200:
            return f"{url}?ticket={response.json()['ticket']}", {}
    return url, session.headers()


async def open_live(
    stack: contextlib.AsyncExitStack, url: str, headers: dict[str, str]
) -> ClientConnection | None:
    """The live socket, its snapshot read; None (and one line said) when it cannot be had."""
    async with contextlib.AsyncExitStack() as attempt:
        try:
            ws = await attempt.enter_async_context(
                connect(url, additional_headers=headers, open_timeout=LIVE_OPEN_TIMEOUT)
            )
            await asyncio.wait_for(ws.recv(), LIVE_OPEN_TIMEOUT)  # the snapshot
        except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
            # A socket that opened but sent no snapshot is closed here, not left unread.
            print(f"video2mp3: no live progress ({_describe(exc)}); polling instead",
                  file=sys.stderr)  # fmt: skip
            return None
        stack.push_async_exit(attempt.pop_all())
    return ws


async def follow(
    ws: ClientConnection, by_job: dict[str, FileJob], early: dict[str, list[ClientEvent]]
) -> None:
    async for raw in ws:
        try:
            event = ClientEvent.model_validate_json(raw)
        except ValidationError:
            continue  # the snapshot, a pong, or an event type this client does not know
        item = by_job.get(event.job_id)
        if item is None:
            early.setdefault(event.job_id, []).append(event)  # before the upload's answer
        else:
            item.events.put_nowait(event)


async def convert_one(
    session: Session,
    item: FileJob,
    reporter: Reporter,
    uploads: asyncio.Semaphore,
    fields: Mapping[str, str],
    by_job: dict[str, FileJob],
    early: dict[str, list[ClientEvent]],
    live: asyncio.Future[None],
) -> None:
    async with uploads:
        try:
            await upload_resumable(session, item, reporter, fields)
        except NoResumableUploads:
            await upload(session, item, reporter, fields)
    assert item.job_id is not None
    by_job[item.job_id] = item
    for event in early.pop(item.job_id, []):
        item.events.put_nowait(event)
    while True:
        try:
            # With the socket gone (or never there) polling is all the news there is.
            wait = POLL_WITH_LIVE if not live.done() else POLL_WITHOUT_LIVE
            event = await asyncio.wait_for(item.events.get(), wait)
        except TimeoutError:
            # The socket may have missed an event: the job document is the truth.
            job = await _poll(session, item)
            if job is None:
                continue
            if not job.status.is_final:
                if job.status is JobStatus.PROCESSING:
                    reporter.state(item, "converting", job.progress)
                continue
            event = ClientEvent(
                type=FINAL_EVENTS[job.status],
                job_id=item.job_id,
                detail=job.error.detail if job.error else None,
            )
        if event.type is EventType.JOB_STARTED:
            reporter.state(item, "converting", 0)
        elif event.type is EventType.JOB_PROGRESS:
            reporter.state(item, "converting", event.progress or 0)
        elif event.type is EventType.JOB_FAILED:
            raise RuntimeError(event.detail or "conversion failed")
        elif event.type is EventType.JOB_CANCELLED:
            raise RuntimeError("cancelled")
        elif event.type is EventType.JOB_COMPLETED:
            break
    reporter.state(item, "downloading")
    # A name of its own (two runs into one directory), removed if the download fails.
    partial = item.target.with_name(f".{item.target.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        await _download(session, item.job_id, partial)
        await asyncio.to_thread(os.replace, partial, item.target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(partial.unlink)
        raise
    reporter.state(item, f"done → {item.target}")


async def _poll(session: Session, item: FileJob) -> JobView | None:
    """The job document, or None after a passing failure (a proxy's 502, a dropped
    connection) while fewer than POLL_FAILURES_MAX have come in a row."""
    try:
        answer = await session.get(f"/v1/jobs/{item.job_id}")
    except httpx.TransportError as exc:
        failure = _describe(exc)
    else:
        if answer.status_code == 200:
            item.poll_failures = 0
            return JobView.model_validate_json(answer.content)
        if answer.status_code < 500:
            raise RuntimeError(_detail(answer))
        failure = _detail(answer)
    item.poll_failures += 1
    if item.poll_failures >= POLL_FAILURES_MAX:
        raise RuntimeError(f"the server stopped answering: {failure}")
    return None


async def _download(session: Session, job_id: str, partial: Path) -> None:
    for attempt in range(2):
        token = session.token
        async with session.client.stream(
            "GET", f"/v1/jobs/{job_id}/download", headers=session.headers()
        ) as response:
            if response.status_code == 401 and attempt == 0:
                await session.renew(token)
                continue
            if response.status_code != 200:
                raise RuntimeError(_detail(response))
            f = await asyncio.to_thread(partial.open, "wb")
            try:
                async for chunk in response.aiter_bytes(READ_BLOCK):
                    await asyncio.to_thread(f.write, chunk)
            finally:
                await asyncio.to_thread(f.close)
            return


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except ValueError:
        return f"HTTP {response.status_code}"


def plan(
    files: list[Path], out_dir: Path | None, force: bool, extension: str = "mp3"
) -> list[FileJob]:
    items = []
    claimed: dict[Path, Path] = {}
    for source in files:
        if not source.is_file():
            raise SystemExit(f"video2mp3: no such file: {source}")
        target = (out_dir or source.parent) / f"{source.stem}.{extension}"
        if target.exists() and not force:
            raise SystemExit(f"video2mp3: {target} exists (use --force to overwrite)")
        other = claimed.setdefault(target.absolute(), source)
        if other is not source:
            # Not even --force: one of the two MP3s would silently replace the other.
            raise SystemExit(
                f"video2mp3: {other} and {source} would both become {target}; "
                "convert them into different directories (-o)"
            )
        items.append(FileJob(source=source, target=target))
    return items


async def run(
    files: list[Path],
    out_dir: Path | None,
    server: str,
    force: bool,
    fields: Mapping[str, str] | None = None,
) -> int:
    fields = dict(fields or {})
    try:
        # Checked here as the server will: a typo fails at once, not once per uploaded file.
        options = ConversionOptions.from_form(fields)
    except InvalidOptions as exc:
        for error in exc.errors:
            print(f"video2mp3: --{error['field'].replace('_', '-')}: {error['reason']}",
                  file=sys.stderr)  # fmt: skip
        return 2
    items = plan(files, out_dir, force, options.output_extension)
    if out_dir is not None:
        try:
            await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            print(f"video2mp3: -o {out_dir}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    reporter = Reporter(sys.stderr.isatty())
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        try:
            session = Session(client, server, await access_token(client, server))
        except (LoginError, httpx.HTTPError) as exc:
            print(f"video2mp3: {_describe(exc)} ({server})", file=sys.stderr)
            return 1
        ws_url = server.replace("http", "ws", 1).rstrip("/") + "/v1/ws"
        by_job: dict[str, FileJob] = {}
        early: dict[str, list[ClientEvent]] = {}
        uploads = asyncio.Semaphore(UPLOADS_AT_ONCE)
        async with contextlib.AsyncExitStack() as stack:
            # Events come over the socket until its token expires; then polling carries on.
            # Without the socket at all (a proxy that refuses upgrades, say) polling does it all.
            ws = await open_live(stack, *await live_credentials(session, ws_url))
            listener = asyncio.create_task(follow(ws, by_job, early) if ws else asyncio.sleep(0))
            try:
                with reporter.progress:
                    work = [
                        asyncio.create_task(
                            convert_one(
                                session, i, reporter, uploads, fields, by_job, early, listener
                            )
                        )
                        for i in items
                    ]
                    try:
                        results = await asyncio.gather(*work, return_exceptions=True)
                    except asyncio.CancelledError:
                        await _cancel_remote(session, items)
                        raise
            finally:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)
    failures = 0
    for item, result in zip(items, results, strict=True):
        if isinstance(result, BaseException):
            failures += 1
            print(f"{item.source.name}: failed: {_describe(result)}", file=sys.stderr)
    return 1 if failures else 0


def _describe(exc: BaseException) -> str:
    # Some errors (httpx's timeouts) have no message at all.
    return str(exc) or type(exc).__name__


async def _cancel_remote(session: Session, items: list[FileJob]) -> None:
    for item in items:
        if item.job_id and not item.status.startswith("done"):
            with contextlib.suppress(httpx.HTTPError):
                await session.client.delete(f"/v1/jobs/{item.job_id}", headers=session.headers())


def convert(
    files: list[str],
    out_dir: str | None,
    server: str,
    force: bool,
    fields: Mapping[str, str] | None = None,
) -> int:
    try:
        return asyncio.run(
            run(
                [Path(f) for f in files],
                Path(out_dir) if out_dir else None,
                server,
                force,
                fields,
            )
        )
    except KeyboardInterrupt:
        print("video2mp3: interrupted; running jobs were cancelled", file=sys.stderr)
        return 130
