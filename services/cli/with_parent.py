"""Run a command that gets SIGTERM when the process that started it dies (Linux).

    python -m services.cli.with_parent PARENT_PID COMMAND [ARG...]

`up` stops its children itself, but not when it is killed with SIGKILL or crashes; without the
parent-death signal they would live on, holding the ports the next `up` needs. The signal must
be armed in the child before it execs its program. Arming it from `preexec_fn` ran Python in
the forked copy of a threaded parent, where a lock some other thread held at the fork stays
held forever; here a fresh interpreter arms it and then becomes the command (the signal
survives exec).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
USAGE = "usage: python -m services.cli.with_parent PARENT_PID COMMAND [ARG...]"


def arm(parent: int) -> str | None:
    """Ask for SIGTERM when `parent` goes; why not, if the kernel refused."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    if prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        return os.strerror(ctypes.get_errno())
    if os.getppid() != parent:  # the parent died before the signal was armed
        os.kill(os.getpid(), signal.SIGTERM)
    return None


def main(argv: list[str]) -> None:
    # A Ctrl-C at `up` reaches this wrapper too: end quietly, as the command itself would, not
    # with Python's KeyboardInterrupt traceback.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit(USAGE)
    refused = arm(int(argv[0]))
    if refused is not None:
        # Still worth running: only a crash of `up` itself would then leave it behind.
        print(f"video2mp3: {argv[1]} will outlive a killed parent: {refused}", file=sys.stderr)
    os.execvp(argv[1], argv[1:])  # noqa: S606 - our own argv, no shell to inject into


def with_parent(command: list[str]) -> list[str]:
    """`command`, run so that it ends with this process (unchanged where Linux's signal is not).

    Start it from the thread that will live as long as this process (the event loop's): the
    kernel sends the signal when the thread that forked the child exits.
    """
    if not sys.platform.startswith("linux"):
        return command
    # Found here, so that a missing program fails at once and says so, as it would without
    # the wrapper (whose own failure to exec may go to a discarded stderr).
    program = shutil.which(command[0])
    if program is None:
        raise FileNotFoundError(errno.ENOENT, "no such program", command[0])
    return [
        sys.executable,
        "-m",
        "services.cli.with_parent",
        str(os.getpid()),
        program,
        *command[1:],
    ]


if __name__ == "__main__":
    main(sys.argv[1:])
