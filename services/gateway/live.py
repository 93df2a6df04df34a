"""Live job events for WebSocket clients.

Each gateway instance consumes the topic exchange through its own exclusive queue, so a client
connected here sees events of jobs uploaded through any instance. Every connection has a bounded
buffer: when a slow client falls behind, intermediate progress is dropped, final events never.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from shared.events import (
    EventType,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobProgress,
    JobStarted,
    client_view,
)

log = logging.getLogger(__name__)

LiveEvent = JobStarted | JobProgress | JobCompleted | JobFailed | JobCancelled
LIVE_EVENTS: tuple[type[LiveEvent], ...] = (
    JobStarted,
    JobProgress,
    JobCompleted,
    JobFailed,
    JobCancelled,
)
LIVE_EVENT_TYPES = [str(model.model_fields["type"].default) for model in LIVE_EVENTS]
BUFFER_LIMIT = 256
# A final event may be published twice (its outbox sent by a converter and by the sweep or a
# redelivery, around a crash); a page must hear it once. Final events are one per job, so the
# ids of the last few thousand cover any such gap.
FINAL_TYPES = frozenset({EventType.JOB_COMPLETED, EventType.JOB_FAILED, EventType.JOB_CANCELLED})
RECENT_FINAL_IDS = 4096


class Subscriber:
    """One connection's buffer of outgoing messages."""

    def __init__(self, limit: int = BUFFER_LIMIT) -> None:
        self._items: deque[dict[str, Any]] = deque()
        self._ready = asyncio.Event()
        self._limit = limit
        self.dropped = 0

    def offer(self, message: dict[str, Any]) -> None:
        if len(self._items) >= self._limit:
            if message["type"] == EventType.JOB_PROGRESS:
                self.dropped += 1
                return
            kept = [m for m in self._items if m["type"] != EventType.JOB_PROGRESS]
            self.dropped += len(self._items) - len(kept)
            self._items = deque(kept)
        self._items.append(message)
        self._ready.set()

    async def next(self) -> dict[str, Any]:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()


class LiveHub:
    def __init__(self) -> None:
        self._by_user: dict[str, set[Subscriber]] = {}
        self._finals_seen: dict[str, None] = {}  # insertion-ordered: the oldest goes first

    def subscribe(self, user_id: str) -> Subscriber:
        subscriber = Subscriber()
        self._by_user.setdefault(user_id, set()).add(subscriber)
        return subscriber

    def unsubscribe(self, user_id: str, subscriber: Subscriber) -> None:
        subscribers = self._by_user.get(user_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._by_user[user_id]

    def connections_of(self, user_id: str) -> int:
        return len(self._by_user.get(user_id, ()))

    @property
    def connections(self) -> int:
        return sum(len(s) for s in self._by_user.values())

    async def deliver(self, event: LiveEvent) -> None:
        """Handler for the gateway's private event queue: fan out, never block."""
        if event.type in FINAL_TYPES and self._seen_before(event.event_id):
            return
        subscribers = self._by_user.get(event.payload.user_id)
        if not subscribers:
            return
        message = client_view(event)
        for subscriber in list(subscribers):
            subscriber.offer(message)

    def _seen_before(self, event_id: str) -> bool:
        if event_id in self._finals_seen:
            return True
        self._finals_seen[event_id] = None
        if len(self._finals_seen) > RECENT_FINAL_IDS:
            del self._finals_seen[next(iter(self._finals_seen))]
        return False
