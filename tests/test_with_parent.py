"""`services.cli.with_parent`: a child that ends with the process that started it (Linux)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.cli.with_parent import with_parent

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's"
)

# A parent with threads running while it starts the child (as `up` has: asyncio's to_thread and
# the resolver), which prints the child's pid and then waits to be killed.
PARENT = """
import subprocess, sys, threading, time
from services.cli.with_parent import with_parent
def busy():
    while True:
        time.sleep(0.001)
for _ in range(4):
    threading.Thread(target=busy, daemon=True).start()
child = subprocess.Popen(with_parent([sys.executable, "-c", "import time; time.sleep(120)"]))
print(child.pid, flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_the_child_ends_when_its_parent_is_killed_outright() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert alive(child)
        time.sleep(0.5)  # the child has exec'd its command by now (or would never end)
        assert alive(child)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child)
    finally:
        if parent.poll() is None:
            parent.kill()
        if alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_parent_gone_before_the_signal_was_armed_ends_the_child_at_once() -> None:
    # The pid given is not our parent: as if it had died between fork and prctl.
    command = with_parent([sys.executable, "-c", "import time; time.sleep(60)"])
    command[command.index(str(os.getpid()))] = "1"
    started = time.monotonic()
    done = subprocess.run(command, timeout=30, check=False)
    assert done.returncode == -signal.SIGTERM
    assert time.monotonic() - started < 20


def test_the_command_runs_as_itself() -> None:
    done = subprocess.run(
        with_parent([sys.executable, "-c", "import os; print(os.getppid())"]),
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert int(done.stdout) == os.getpid()  # exec'd in place: no wrapper in between


def test_a_malformed_call_says_how_to_call_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.with_parent", "sleep", "1"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "usage: python -m services.cli.with_parent PARENT_PID COMMAND" in done.stderr


def test_a_missing_program_fails_at_once_in_the_parent() -> None:
    # The wrapper would start, fail to exec into a discarded stderr, and `up` would wait 30 s for
    # a port nobody opens.
    with pytest.raises(FileNotFoundError, match="no-such-program"):
        with_parent(["no-such-program-of-ours", "--flag"])
