"""Disk writeback started while a file is still being written.

A stored upload is fsync'd before the client hears "created" (a job is never acknowledged and
then lost), and fsync alone would start writing 1 GiB to disk only once the last byte is in:
on this machine that is ~0.35 s of waiting after the transfer. Linux's sync_file_range(2) with
SYNC_FILE_RANGE_WRITE queues the pages just written for writeback without waiting for it, so
the disk works during the upload and the final fsync has only the tail left. It promises no
durability by itself (the fsync still does that); where the call is missing, nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

SYNC_FILE_RANGE_WRITE = 2


def _load() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_sync_file_range = _load()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Queue [offset, offset + length) of `fd` for writeback; returns without waiting for it.

    Errors are ignored: an I/O error surfaces at the fsync that follows, which is the promise.
    """
    if _sync_file_range is not None and length > 0:
        _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)
