"""Processes as Linux's /proc shows them: for tests that find a service's children."""

from __future__ import annotations

import os
from pathlib import Path


def _stat(pid: int | str) -> tuple[str, list[str]] | None:
    """A process's name and the fields after it, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name, _, rest = text.partition(" (")[2].rpartition(")")
    return name, rest.split()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _stat(entry.name)
        if stat is not None and len(stat[1]) > 1 and int(stat[1][1]) == pid:
            found.append(int(entry.name))
    return found


def descendants_of(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        children = children_of(todo.pop())
        found += children
        todo += children
    return found


def name_of(pid: int) -> str | None:
    stat = _stat(pid)
    return None if stat is None else stat[0]


def alive(pid: int) -> bool:
    stat = _stat(pid)
    # A zombie waits for its reaper, not for us.
    return stat is not None and bool(stat[1]) and stat[1][0] not in ("Z", "X")


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) spent so far by a process and all its descendants, the live
    ones and those already reaped."""
    ticks = 0
    for each in (pid, *descendants_of(pid)):
        stat = _stat(each)
        if stat is not None:
            ticks += sum(int(v) for v in stat[1][11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")
