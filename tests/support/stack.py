"""Run the four services as real processes (`video2mp3 serve NAME`) for end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.net import free_port

SERVICES = ("auth", "notification", "converter", "gateway")


@dataclass
class Stack:
    env: dict[str, str]
    ports: dict[str, int]
    log_dir: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['gateway']}"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, name: str, service: str | None = None) -> None:
        """Start `service` (default: `name`) under `name`, e.g. a second gateway as "gateway2"."""
        self.launch(name, service)
        self.wait_ready(name)

    def launch(self, name: str, service: str | None = None) -> None:
        """Start the process without waiting for it to be ready."""
        self.ports.setdefault(name, free_port())
        log = (self.log_dir / f"{name}.log").open("ab")
        command = ["serve", service or name, "--port", str(self.ports[name])]
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", *command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")
            try:
                if httpx.get(self.url(name) + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{name} not ready in {timeout}s: {self.log_tail(name)}")

    def stop(self, name: str, sig_kill: bool = False) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        if sig_kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_tail(self, name: str, size: int = 4000) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else ""


@contextmanager
def running_stack(env_overrides: dict[str, str], log_dir: Path) -> Iterator[Stack]:
    ports = {name: free_port() for name in SERVICES}
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("MONGO_", "SMTP_", "DATABASE_"))
    }
    env.update(
        {
            "AUTH_URLS": f"http://127.0.0.1:{ports['auth']}",
            "NOTIFICATION_URLS": f"http://127.0.0.1:{ports['notification']}",
            "PUBLIC_URL": f"http://127.0.0.1:{ports['gateway']}",
            "CONVERTER_CONCURRENCY": "2",
            "LOG_LEVEL": "INFO",
            # Suites register a user per test, all through one gateway, i.e. from one address.
            "SIGNUP_MAX_PER_ADDRESS": "100000",
            # Suites that count job mails register users without proving their addresses;
            # tests of verification (tests/e2e/test_accounts.py) turn it back on.
            "VERIFY_EMAILS": "false",
        }
    )
    env.update(env_overrides)
    prefix = env.get("AMQP_PREFIX", "")
    if not prefix or prefix.startswith("video2mp3"):
        # The names of a `video2mp3 up` (the default, or the video2mp3-… it derives): a test's
        # stack on them and that `up` would take each other's jobs.
        raise ValueError(f"a test stack needs an AMQP_PREFIX of its own, not {prefix!r}")
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(env=env, ports=ports, log_dir=log_dir)
    try:
        # Everything but the gateway starts at once (the gateway fetches auth's keys lazily, but
        # its readiness probe wants the others up); start-up is then one service long, not four.
        first = [name for name in SERVICES if name != "gateway"]
        for name in first:
            stack.launch(name)
        for name in first:
            stack.wait_ready(name, timeout=120)
        stack.start("gateway")
        yield stack
    finally:
        for name in reversed(list(stack.procs)):
            stack.stop(name)
