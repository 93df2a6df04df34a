"""`video2mp3 up`: every service as a supervised process, embedded defaults where unset."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aio_pika

from services.cli.embedded import (
    free_port,
    port_is_free,
    start_embedded_mongo,
    wait_for_port,
)
from services.cli.serve import service_port
from services.cli.with_parent import with_parent
from shared.settings import Settings, get_settings, load_or_create_secret
from shared.topology import Topology

SERVICES = ("auth", "notification", "converter", "gateway")
RESTART_BACKOFF_MAX = 30.0
STOP_TIMEOUT = 40.0
# Where the AMQP prefix made for a VAR_DIR is kept, so that its stack keeps its queues.
PREFIX_FILE = "amqp-prefix"


@dataclass
class Child:
    name: str
    port: int
    env: dict[str, str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    async def start(self) -> None:
        # A session of its own: a Ctrl-C in the terminal reaches `up` alone, which stops each
        # service with SIGTERM, rather than every process of the service (FFmpeg helpers
        # included) at once, each with its own KeyboardInterrupt traceback.
        self.proc = await asyncio.create_subprocess_exec(
            *with_parent([
                sys.executable, "-m", "services.cli.main", "serve", self.name,
                "--port", str(self.port),
            ]),
            env=self.env,
            start_new_session=True,
        )  # fmt: skip
        self.started_at = time.monotonic()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def say(message: str) -> None:
    print(f"video2mp3: {message}", flush=True)


async def broker_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 5672), 5
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def wait_ready(
    child: Child, stopping: asyncio.Event | None = None, timeout: float = 90.0
) -> None:
    """Until the child answers /readyz; returns early once a stop was asked for."""
    deadline = time.monotonic() + timeout
    # Imported here, once the services are starting, rather than before they can.
    import httpx

    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if stopping is not None and stopping.is_set():
                return
            if child.proc is not None and child.proc.returncode is not None:
                raise RuntimeError(
                    f"{child.name} exited with {child.proc.returncode} while starting"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = await client.get(f"http://127.0.0.1:{child.port}/readyz")
                if response.status_code == 200:
                    return
            await asyncio.sleep(0.3)
    raise TimeoutError(f"{child.name} not ready after {timeout:.0f}s")


async def wait_all_ready(children: list[Child], stopping: asyncio.Event) -> None:
    """Until every child is ready; the first that cannot be ends the wait."""
    waits = [asyncio.create_task(wait_ready(child, stopping)) for child in children]
    try:
        for done in asyncio.as_completed(waits):
            await done
    finally:
        for wait in waits:
            wait.cancel()


async def supervise(child: Child, stopping: asyncio.Event) -> None:
    """Restart a child that dies, with a growing pause so a crash loop does not spin."""
    backoff = 1.0
    while not stopping.is_set():
        assert child.proc is not None
        code = await child.proc.wait()
        if stopping.is_set():
            return
        if time.monotonic() - child.started_at > 60:
            backoff = 1.0
        say(f"{child.name} exited with {code}; restarting in {backoff:.0f}s")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, RESTART_BACKOFF_MAX)
        child.restarts += 1
        await child.start()


def amqp_prefix(settings: Settings) -> str:
    """AMQP_PREFIX when set; else this VAR_DIR's own, made once: two stacks on one broker with
    the default names would take each other's jobs and mail each other's users."""
    if "amqp_prefix" in settings.model_fields_set:
        return settings.amqp_prefix
    path = settings.var_dir / PREFIX_FILE
    made = load_or_create_secret(path, lambda: f"video2mp3-{secrets.token_hex(4)}".encode())
    return made.decode()


async def foreign_consumers(url: str, topology: Topology, timeout: float) -> dict[str, int]:
    """Consumers already on the work queues this stack will use, by queue: before our services
    start, every one of them belongs to someone else."""
    found: dict[str, int] = {}
    connection = await aio_pika.connect(url, timeout=timeout)
    async with connection:
        for name in topology.work_queues:
            channel = await connection.channel()
            try:
                # Passive: tells how many consume it, and creates nothing.
                queue = await channel.declare_queue(name, passive=True, timeout=timeout)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                continue
            count = queue.declaration_result.consumer_count or 0
            if count:
                found[name] = count
    return found


async def warn_of_foreign_consumers(settings: Settings, prefix: str) -> None:
    try:
        found = await asyncio.wait_for(
            foreign_consumers(settings.amqp_url, Topology(prefix), settings.network_timeout),
            settings.network_timeout * 2,
        )
    except (OSError, TimeoutError, RuntimeError, aio_pika.exceptions.AMQPError) as exc:
        # The services meet the same broker in a moment, and say what is wrong with it.
        say(f"could not check the broker's queues for other consumers: {exc}")
        return
    for name, count in found.items():
        say(
            f"warning: queue {name} already has {count} consumer(s) this `up` did not start "
            "(another stack with the same AMQP_PREFIX?); they will take some of its messages. "
            "Give each stack its own AMQP_PREFIX, or leave it unset."
        )


async def run(settings: Settings) -> int:
    if not await broker_reachable(settings.amqp_url):
        say(
            f"RabbitMQ is not reachable at {urlsplit(settings.amqp_url).hostname}.\n"
            "  Start one: `rabbitmq-server -detached` (Debian: apt-get install rabbitmq-server)\n"
            "  or `docker run -d -p 5672:5672 rabbitmq:4-management`, or set AMQP_URL."
        )
        return 2
    taken = [
        f"{name} port {port}"
        for name in SERVICES
        if not _can_listen(settings.bind_host, port := service_port(name, settings))
    ]
    if taken:
        # Checked first: the services of another `up` would otherwise answer our readiness
        # checks, and ours would crash-loop on the ports forever.
        say(
            f"{', '.join(taken)} in use (is `video2mp3 up` already running?); "
            "stop it, or choose other ports with GATEWAY_PORT, AUTH_PORT, ..."
        )
        return 2
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    prefix = await asyncio.to_thread(amqp_prefix, settings)
    env = {**os.environ, **_local_urls(settings)}
    env["VAR_DIR"] = str(settings.var_dir.resolve())
    env["AMQP_PREFIX"] = prefix
    mongo_proc = None
    sink = None
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    # SIGHUP too: a closed terminal must stop the stack, not orphan it.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stopping.set)
    children: list[Child] = []
    try:
        # Before our services consume: every consumer found now is someone else's.
        await warn_of_foreign_consumers(settings, prefix)
        if not settings.mongo_url:
            mongo_proc, mongo_port = await start_embedded_mongo(settings.var_dir / "mongo")
            env["MONGO_URL"] = f"mongodb://127.0.0.1:{mongo_port}"
        if not settings.smtp_url:
            from services.notification.sink import MailSink

            port = 8025 if port_is_free(8025) else free_port()
            sink = MailSink(settings.var_dir / "mail", "127.0.0.1", port)
            await sink.start()
            env["SMTP_URL"] = f"smtp://127.0.0.1:{port}"
        # All at once, without waiting for nx-27017 to listen: each service waits for what it
        # needs by itself (MongoDB within its timeout, the gateway's readiness for auth), and
        # start-up takes as long as the slowest, not the sum. Secrets they share are created
        # atomically by whichever comes first.
        if stopping.is_set():  # Ctrl-C or SIGTERM while starting: stop what runs
            return 0
        children = [Child(name, service_port(name, settings), env) for name in SERVICES]
        for child in children:
            await child.start()
        if mongo_proc is not None:
            await wait_for_port(mongo_port, 30)
            say(f"embedded MongoDB-wire server (nx-27017) at {env['MONGO_URL']}")
        if sink is not None:
            say(f"embedded mail sink: mails kept in {settings.var_dir / 'mail'}")
        if not settings.database_url:
            say(f"user store: SQLite at {settings.resolved_database_url.split('///')[-1]}")
        say(f"AMQP prefix: {prefix}")
        await wait_all_ready(children, stopping)
        if stopping.is_set():
            return 0
        watchers = [asyncio.create_task(supervise(c, stopping)) for c in children]
        base = f"http://{settings.bind_host}:{settings.gateway_port}"
        say(f"ready. API: {base}/v1  docs: {base}/docs  web page: {base}/  (Ctrl-C stops)")
        await stopping.wait()
        for w in watchers:
            w.cancel()
        return 0
    except (RuntimeError, TimeoutError) as exc:
        say(f"could not start: {exc}")
        return 1
    finally:
        stopping.set()
        say("stopping")
        await asyncio.gather(*(c.stop() for c in reversed(children)))
        if sink is not None:
            await sink.stop()
        if mongo_proc is not None and mongo_proc.returncode is None:
            mongo_proc.terminate()
            await mongo_proc.wait()


def _can_listen(host: str, port: int) -> bool:
    """Whether a server could listen on host:port as uvicorn does (SO_REUSEADDR: a port left in
    TIME_WAIT by the last run is free; one another process listens on is not)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _local_urls(settings: Settings) -> dict[str, str]:
    """Where the services find each other on this host, from the ports chosen, for each URL
    not set explicitly (with AUTH_PORT=18001, the gateway must call 18001, not 8001)."""
    urls = {
        "AUTH_URLS": f"http://127.0.0.1:{settings.auth_port}",
        "NOTIFICATION_URLS": f"http://127.0.0.1:{settings.notification_port}",
        "PUBLIC_URL": f"http://127.0.0.1:{settings.gateway_port}",
    }
    return {name: url for name, url in urls.items() if name not in os.environ}


def up() -> int:
    return asyncio.run(run(get_settings()))
