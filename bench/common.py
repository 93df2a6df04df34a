"""What every benchmark shares: its own stack, a logged-in client, media, tables and results.

Each benchmark starts its own dependencies and services (an nx-27017 MongoDB-wire server on a
free port, an SMTP catcher, SQLite for auth, its own AMQP prefix on the shared RabbitMQ) and
removes them afterwards, so benchmarks never see each other's data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import websockets  # noqa: E402

from services.cli.embedded import nx_27017_command  # noqa: E402
from shared.ffmpeg_path import ffmpeg_executable  # noqa: E402
from tests.support.amqp import delete_topology  # noqa: E402
from tests.support.net import free_port, wait_for_port  # noqa: E402
from tests.support.smtp import SmtpCatcher  # noqa: E402
from tests.support.stack import Stack, running_stack  # noqa: E402

RESULTS_DIR = REPO / "bench" / "results"
CACHE_DIR = Path(os.environ.get("BENCH_CACHE", str(REPO / "bench" / ".cache")))
AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
MIB = 1024 * 1024
GIB = 1024 * MIB
VIDEO_SIZE = "320x240"


# --- output -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "ffmpeg": ffmpeg_executable(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    data = {"benchmark": name, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **data}
    data.setdefault("machine", machine())
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"written: {path.relative_to(REPO)}")
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


# --- media ------------------------------------------------------------------------------------


def ffmpeg() -> str:
    return ffmpeg_executable()


def h264_aac(seconds: int, size: str = VIDEO_SIZE, rate: int = 25) -> Path:
    """A cached H.264/AAC MP4 (testsrc2 video, 440 Hz stereo tone), like a phone video."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    out = CACHE_DIR / f"h264_aac_{seconds}s_{size}_{rate}fps.mp4"
    if not out.exists():
        tmp = out.with_suffix(".part.mp4")
        subprocess.run(
            [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-nostdin",
             "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}",
             "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}",
             "-ac", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "128k", "-shortest", "-movflags", "+faststart", str(tmp)],
            check=True,
        )  # fmt: skip
        tmp.rename(out)
    return out


def padded_mp4(size: int, directory: Path) -> Path:
    """A valid MP4 of exactly `size` bytes: a 10 s clip, then one sparse `free` box.

    The clip converts in a moment, so the job completes; the padding is zeros that cost no disk
    until written. Uploads and downloads of it exercise the byte paths, not the encoder.
    """
    clip = h264_aac(10)
    out = directory / f"padded_{size}.mp4"
    head = clip.read_bytes()
    pad = size - len(head)
    if pad < 16:
        raise ValueError("size too small")
    with out.open("wb") as f:
        f.write(head)
        # ISO BMFF box with a 64-bit size: size=1, type, largesize (header included).
        f.write((1).to_bytes(4, "big") + b"free" + pad.to_bytes(8, "big"))
        f.truncate(size)
    return out


def raw_ffmpeg_mp3(source: Path, output: Path) -> float:
    """The issue's baseline encode, timed: `ffmpeg -i IN -vn -c:a libmp3lame -q:a 2 OUT.mp3`."""
    started = time.perf_counter()
    subprocess.run(
        [ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-i", str(source), "-vn", "-c:a", "libmp3lame", "-q:a", "2", str(output)],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - started


# --- dependencies and the stack ---------------------------------------------------------------


@dataclass
class Deps:
    root: Path
    mongo_url: str
    mongo_pid: int
    smtp: SmtpCatcher


@contextlib.contextmanager
def dependencies() -> Iterator[Deps]:
    """nx-27017 on a free port and an SMTP catcher, in a temp dir removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="v2m-bench-"))
    data = root / "mongo"
    data.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        nx_27017_command(data, port),
        stdout=subprocess.DEVNULL,
        stderr=(data / "stderr.log").open("wb"),
    )
    smtp = SmtpCatcher()
    try:
        wait_for_port(port)
        smtp.start()
        yield Deps(root, f"mongodb://127.0.0.1:{port}", proc.pid, smtp)
    finally:
        with contextlib.suppress(Exception):
            smtp.stop()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class BenchStack:
    stack: Stack
    deps: Deps
    backend: str
    var_dir: Path
    mongo_db: str
    prefix: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.stack.gateway_url

    @property
    def blob_dir(self) -> Path:
        return self.var_dir / "blobs"

    def pid(self, service: str) -> int:
        return self.stack.procs[service].pid

    async def output_blob_id(self, job_id: str) -> str:
        """The blob a completed job's download serves (named per conversion attempt)."""
        from shared.jobstore import JobStore
        from shared.mongo import mongo_client

        client = mongo_client(self.deps.mongo_url, timeout=30)
        try:
            job = await JobStore(client[self.mongo_db]).get(job_id)
        finally:
            await client.close()
        assert job is not None
        assert job.output_blob_id, job
        return job.output_blob_id


@contextlib.asynccontextmanager
async def bench_stack(deps: Deps, backend: str, **env: str) -> AsyncIterator[BenchStack]:
    """The four services as real processes on `backend`, with their own AMQP prefix and db."""
    tag = uuid.uuid4().hex[:10]
    var_dir = deps.root / f"stack-{backend}-{tag}"
    prefix = f"bench-{tag}"
    overrides = {
        "AMQP_URL": AMQP_URL,
        "AMQP_PREFIX": prefix,
        "MONGO_URL": deps.mongo_url,
        "MONGO_DB": f"bench{tag}",
        "SMTP_URL": deps.smtp.url,
        "BLOB_STORE": backend,
        "VAR_DIR": str(var_dir),
        "BLOB_DIR": str(var_dir / "blobs"),
        "LOG_LEVEL": "WARNING",
        "CONVERTER_CONCURRENCY": str(os.cpu_count() or 1),  # the product's default
        # One account sends every job of a benchmark: the per-account quotas would cap it.
        "USER_MAX_ACTIVE_JOBS": "0",
        "USER_JOBS_PER_DAY": "0",
        "USER_STORAGE_BYTES": "0",
        "USER_MAX_UPLOADS": "0",
        "USER_MAX_SOCKETS": "0",  # api's fan-out opens 50 WebSockets per account
        **env,
    }
    try:
        with running_stack(overrides, var_dir / "logs") as stack:
            yield BenchStack(stack, deps, backend, var_dir, f"bench{tag}", prefix)
    finally:
        await delete_topology(AMQP_URL, prefix)


async def login(client: httpx.AsyncClient) -> str:
    """Register a fresh user; returns its access token."""
    email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
    password = "correct horse battery staple"
    r = await client.post("/v1/auth/register", json={"email": email, "password": password})
    r.raise_for_status()
    r = await client.post("/v1/auth/login", data={"username": email, "password": password})
    r.raise_for_status()
    token: str = r.json()["access_token"]
    return token


def ws_url(base: str, token: str) -> str:
    return base.replace("http://", "ws://") + f"/v1/ws?access_token={token}"


class JobWatcher:
    """One WebSocket of a user; records when each job's final event arrived (monotonic)."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token
        self.done: dict[str, asyncio.Future[tuple[str, float]]] = {}
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    def future(self, job_id: str) -> asyncio.Future[tuple[str, float]]:
        if job_id not in self.done:
            self.done[job_id] = asyncio.get_running_loop().create_future()
        return self.done[job_id]

    async def __aenter__(self) -> JobWatcher:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 30)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        async with websockets.connect(ws_url(self.base, self.token), max_size=None) as ws:
            async for raw in ws:
                now = time.monotonic()
                message = json.loads(raw)
                if message.get("type") == "snapshot":
                    self._ready.set()
                    continue
                self.events.append((time.time(), message))
                kind = message.get("type")
                if kind in ("job.completed", "job.failed", "job.cancelled"):
                    fut = self.future(message["job_id"])
                    if not fut.done():
                        fut.set_result((kind, now))

    async def wait(self, job_id: str, timeout: float = 600) -> tuple[str, float]:
        return await asyncio.wait_for(asyncio.shield(self.future(job_id)), timeout)


async def upload(
    client: httpx.AsyncClient, token: str, path: Path, form: dict[str, str] | None = None
) -> tuple[str, float, float]:
    """POST /v1/jobs; returns job id, monotonic time of the response, upload seconds."""
    started = time.monotonic()
    with path.open("rb") as f:
        r = await client.post(
            "/v1/jobs",
            headers={"authorization": f"Bearer {token}"},
            files={"file": (path.name, f, "video/mp4")},
            data=form or {},
        )
    now = time.monotonic()
    if r.status_code != 202:
        raise RuntimeError(f"upload failed: {r.status_code} {r.text}")
    job_id: str = r.json()["id"]
    return job_id, now, now - started


def curl_upload(url: str, token: str, path: Path) -> tuple[str, float]:
    """Upload with curl (as fast a client as there is); returns job id and seconds."""
    started = time.perf_counter()
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-H", f"Authorization: Bearer {token}",
         "-H", "Expect:", "-F", f"file=@{path};type=video/mp4", f"{url}/v1/jobs"],
        check=True, capture_output=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - started
    job_id: str = json.loads(out.stdout)["id"]
    return job_id, elapsed


def curl_download(url: str, token: str | None = None) -> tuple[int, float]:
    """GET into /dev/null with curl; returns bytes and seconds."""
    headers = ["-H", f"Authorization: Bearer {token}"] if token else []
    started = time.perf_counter()
    out = subprocess.run(
        ["curl", "-sS", "--fail", *headers, "-o", "/dev/null", "-w", "%{size_download}", url],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return int(float(out.stdout)), time.perf_counter() - started


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, KiB."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def _is_libav_process(pid: int) -> bool:
    try:
        return b"shared.media.child" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(p) for p in (task / "children").read_text().split()]
    return found


async def wait_job(
    client: httpx.AsyncClient, token: str, job_id: str, timeout: float = 600
) -> dict[str, Any]:
    """Poll GET /v1/jobs/{id} until the job is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await client.get(f"/v1/jobs/{job_id}", headers={"authorization": f"Bearer {token}"})
        r.raise_for_status()
        job: dict[str, Any] = r.json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.2)
    raise TimeoutError(job_id)


def long_video(seconds: int) -> Path:
    """A cached long low-res H.264/AAC MP4 (64x48 at 1 fps, 22.05 kHz mono AAC): hours of
    audio in little time and disk, for the converter's memory."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    out = CACHE_DIR / f"long_{seconds}s_64x48.mp4"
    if not out.exists():
        tmp = out.with_suffix(".part.mp4")
        subprocess.run(
            [ffmpeg(), "-hide_banner", "-loglevel", "error", "-y", "-nostdin",
             "-f", "lavfi", "-i", f"testsrc2=size=64x48:rate=1:duration={seconds}",
             "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=22050:duration={seconds}",
             "-ac", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
             "-c:a", "aac", "-b:a", "48k", "-shortest", "-movflags", "+faststart", str(tmp)],
            check=True,
        )  # fmt: skip
        tmp.rename(out)
    return out


class RssSampler:
    """Polls VmRSS of a process and of its children every `interval` seconds: the peak of the
    process, of its largest FFmpeg child and of its largest libav process."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self.peak_child_kib = 0
        self.peak_libav_kib = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid).get("VmRSS", 0))
            for child in children(self.pid):
                kib = rss_kib(child).get("VmRSS", 0)
                if _is_libav_process(child):
                    self.peak_libav_kib = max(self.peak_libav_kib, kib)
                else:
                    self.peak_child_kib = max(self.peak_child_kib, kib)
            await asyncio.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
