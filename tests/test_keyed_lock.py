"""KeyedLock: holders of one key take turns, other keys go on, and nothing is kept after."""

from __future__ import annotations

import asyncio

from shared.aio import KeyedLock


async def test_one_key_takes_turns_other_keys_do_not_wait() -> None:
    locks = KeyedLock()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}

    async def hold(key: str) -> None:
        async with locks.hold(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            await asyncio.sleep(0.01)
            inside[key] -= 1

    b_done = asyncio.gather(*(hold("b") for _ in range(3)))
    async with locks.hold("a"):
        # "b" is free while "a" is held.
        await asyncio.wait_for(b_done, 1)
    await asyncio.gather(*(hold("a") for _ in range(5)))
    assert most == {"a": 1, "b": 1}
    assert locks._locks == {}
    assert locks._users == {}


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    locks = KeyedLock()
    async with locks.hold("a"):
        waiter = asyncio.ensure_future(locks.hold("a").__aenter__())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
    assert locks._locks == {}
    assert locks._users == {}
