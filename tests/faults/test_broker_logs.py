"""A broker restart is told once per service, and its end once: no tracebacks, no repeats."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.conftest import StackFactory
from tests.e2e.test_pipeline import upload, wait_final
from tests.faults.conftest import client_and_user
from tests.support.media import MediaFactory
from tests.support.proxy import tcp_proxy
from tests.support.smtp import SmtpCatcher

BROKER_USERS = ("gateway", "converter", "notification")


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{parts.password}@127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def close_from_the_broker(ports: set[int]) -> None:
    """The broker closes the connections from these ports (CONNECTION_FORCED), as it does to
    every connection when it stops; others' connections to the shared broker are left alone."""
    listed = subprocess.run(
        ["rabbitmqctl", "list_connections", "pid", "peer_port", "-q", "--no-table-headers"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    pids = [
        pid for pid, port in (line.split() for line in listed.splitlines()) if int(port) in ports
    ]
    assert len(pids) == len(ports), (listed, ports)
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "close_connection", pid, "broker restart (test)"],
            check=True,
            capture_output=True,
            timeout=60,
        )


@pytest.mark.parametrize("how", ["dropped", "closed by the broker"])
async def test_a_broker_restart_logs_one_warning_and_one_recovery_per_service(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory, amqp_url: str, how: str
) -> None:
    broker = urlsplit(amqp_url)
    with tcp_proxy(broker.hostname or "127.0.0.1", broker.port or 5672) as proxy:
        env = {"AMQP_URL": through(amqp_url, proxy.port)}
        async with private_stack(smtp.url, **env) as stack, client_and_user(stack) as (c, user):
            marks = {name: len(stack.log_tail(name, 10**9)) for name in BROKER_USERS}
            if how == "dropped":
                proxy.cut()
            else:
                proxy.refuse()
                await asyncio.to_thread(close_from_the_broker, proxy.upstream_ports())
            await asyncio.sleep(6)  # several reconnection attempts fail meanwhile
            proxy.restore()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                logs = {name: stack.log_tail(name, 10**9)[marks[name] :] for name in marks}
                if all("reconnected to the broker" in log for log in logs.values()):
                    break
                await asyncio.sleep(0.5)
            # The stack works again: a job goes through.
            job = (await upload(c, user, media.h264_aac(2, size="64x48"), "after.mp4")).json()
            assert (await wait_final(c, user, job["id"]))["status"] == "completed"
    for name, log in logs.items():
        # What the messaging code and its libraries say (a loaded machine may add unrelated
        # warnings, a slow auth answering the gateway, that are no part of the outage).
        warnings = re.findall(
            r" (?:WARNING|ERROR|CRITICAL) (?:shared\.messaging|aio_pika|aiormq).*", log
        )
        recovered = re.findall(r" INFO .*reconnected to the broker.*", log)
        assert len(warnings) == 1, (name, log)
        assert "lost the broker" in warnings[0], (name, log)
        assert len(recovered) == 1, (name, log)
        assert "Traceback" not in log, (name, log)
