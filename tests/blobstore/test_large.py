"""One blob larger than any single server reply may be (nx-27017 fails past ~48 MB per cursor)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator

from shared.blobstore.base import MIB
from tests.blobstore.conftest import Backend

LARGE = 120 * MIB


async def test_write_and_read_120_mb(backend: Backend) -> None:
    store = backend.store
    sent = hashlib.sha256()

    async def generated() -> AsyncIterator[bytes]:
        for _ in range(LARGE // MIB):
            block = os.urandom(MIB)
            sent.update(block)
            yield block

    t0 = time.perf_counter()
    assert await store.write("large", generated()) == LARGE
    t1 = time.perf_counter()
    received = hashlib.sha256()
    count = 0
    async for block in store.read("large"):
        received.update(block)
        count += len(block)
    t2 = time.perf_counter()

    assert count == LARGE
    assert received.hexdigest() == sent.hexdigest()
    mb = LARGE / 1e6
    print(f"\n{backend.name}: write {mb / (t1 - t0):.0f} MB/s, read {mb / (t2 - t1):.0f} MB/s")
    await store.delete("large")
