"""shared.blobstore.writeback: the real sync_file_range(2) call, where Linux has it."""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

import pytest

from shared.blobstore import writeback


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_writeback_calls_the_kernel(tmp_path: Path) -> None:
    fn = writeback._sync_file_range
    assert fn is not None
    path = tmp_path / "blob"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 65536)
        assert fn(fd, 0, 65536, writeback.SYNC_FILE_RANGE_WRITE) == 0
        writeback.start_writeback(fd, 0, 65536)
    finally:
        os.close(fd)
    # A closed descriptor is refused by the kernel itself: the call is not a stub.
    assert fn(fd, 0, 65536, writeback.SYNC_FILE_RANGE_WRITE) == -1
    assert ctypes.get_errno() == 9  # EBADF
    assert path.read_bytes() == b"x" * 65536
