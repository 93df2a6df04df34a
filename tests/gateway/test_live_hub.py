"""The live hub's fan-out: a final event published twice reaches a page once."""

from __future__ import annotations

import asyncio
from typing import Any

from services.gateway.live import RECENT_FINAL_IDS, LiveHub, Subscriber
from shared.events import (
    JobCancelled,
    JobCompleted,
    JobCompletedPayload,
    JobProgress,
    JobProgressPayload,
    JobRef,
)


def completed(job_id: str) -> JobCompleted:
    return JobCompleted(
        payload=JobCompletedPayload(
            job_id=job_id,
            user_id="u1",
            user_email="u1@example.com",
            filename="a.mp4",
            output_filename="a.mp3",
            size=1,
            duration=1.0,
            bitrate=128000,
        )
    )


async def drain(subscriber: Subscriber) -> list[dict[str, Any]]:
    got = []
    while True:
        try:
            got.append(await asyncio.wait_for(subscriber.next(), 0.05))
        except TimeoutError:
            return got


async def test_a_final_event_sent_twice_is_delivered_once() -> None:
    hub = LiveHub()
    page = hub.subscribe("u1")
    first = completed("j1")
    cancelled = JobCancelled(payload=JobRef(job_id="j2", user_id="u1"))
    progress = JobProgress(payload=JobProgressPayload(job_id="j3", user_id="u1", progress=5))
    for event in (first, first, cancelled, progress, cancelled, progress):
        await hub.deliver(event)
    # The same job's outcome under a new id (a second attempt's) is news, not a duplicate.
    await hub.deliver(completed("j1"))
    got = [(m["type"], m["job_id"]) for m in await drain(page)]
    assert got == [
        ("job.completed", "j1"),
        ("job.cancelled", "j2"),
        ("job.progress", "j3"),
        ("job.progress", "j3"),
        ("job.completed", "j1"),
    ]


async def test_the_memory_of_final_events_is_bounded() -> None:
    hub = LiveHub()
    page = hub.subscribe("u1")
    oldest = completed("old")
    await hub.deliver(oldest)
    for n in range(RECENT_FINAL_IDS):
        await hub.deliver(completed(f"j{n}"))
    await drain(page)
    await hub.deliver(oldest)  # forgotten by now: delivered again, memory stays flat
    assert [m["job_id"] for m in await drain(page)] == ["old"]
    assert len(hub._finals_seen) == RECENT_FINAL_IDS
