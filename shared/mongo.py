"""The MongoDB client, with timeouts on every operation so an outage fails fast."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, ExecutionTimeout

# What a database that is down, unreachable or overloaded raises (NetworkTimeout and
# ServerSelectionTimeoutError are ConnectionFailures): an outage, no fault of the request.
DATABASE_OUTAGES = (ConnectionFailure, ExecutionTimeout)


def mongo_client(url: str, timeout: float = 10.0) -> AsyncMongoClient[dict[str, Any]]:
    ms = int(timeout * 1000)
    return AsyncMongoClient(
        url,
        tz_aware=True,
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=ms * 3,
        timeoutMS=ms * 3,
        appname="video2mp3",
    )
