"""Work that must not stop halfway when whoever awaits it is cancelled.

One rule, one place: such work runs in its own task, awaited under `asyncio.shield`; if the
caller is cancelled meanwhile, the task is kept referenced until it ends (the loop holds tasks
only weakly) and its outcome is read, a failure logged, so nothing is lost and nothing warns
"exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)

_kept: set[asyncio.Future[Any]] = set()


def keep(
    fut: asyncio.Future[T],
    what: str,
    *,
    expected: tuple[type[BaseException], ...] = (),
    undo: Callable[[T], object] | None = None,
) -> None:
    """Keep `fut`, which nobody awaits any more, referenced until it ends; then read its
    outcome: a failure is logged (`what` names the step) unless it is one of `expected`; a
    result is handed to `undo`, when given, to release what it holds."""
    _kept.add(fut)
    fut.add_done_callback(functools.partial(_read_outcome, what=what, expected=expected, undo=undo))


def _read_outcome(
    fut: asyncio.Future[T],
    *,
    what: str,
    expected: tuple[type[BaseException], ...],
    undo: Callable[[T], object] | None,
) -> None:
    _kept.discard(fut)
    if fut.cancelled():
        return
    error = fut.exception()
    if error is None:
        if undo is not None:
            try:
                undo(fut.result())
            except Exception as exc:
                log.warning("could not undo %s: %r", what, exc)
    elif not isinstance(error, expected):
        log.warning("%s failed: %r", what, error)


async def shielded(
    aw: Awaitable[T],
    what: str,
    *,
    wait: bool = False,
    expected: tuple[type[BaseException], ...] = (),
    undo: Callable[[T], object] | None = None,
) -> T:
    """Await `aw` so that cancelling the caller cannot interrupt it.

    A cancellation is raised at once, `aw` finishing alone (see `keep` for `expected` and
    `undo`); with `wait`, only once `aw` has finished, for commits and clean-ups the caller
    must not outrun.
    """
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        keep(task, what, expected=expected, undo=undo)
        if wait:
            await finish_regardless(task)
        raise


async def finish_regardless(fut: asyncio.Future[Any]) -> None:
    """Wait for `fut` to end, even through further cancellations; then raise the
    cancellation, if there was one. Its outcome is for its owner to read."""
    cancelled = False
    while not fut.done():
        try:
            await asyncio.wait({fut})
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


class KeyedLock:
    """One lock per key (e.g. per account), kept only while somebody holds or awaits it."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                del self._users[key], self._locks[key]
