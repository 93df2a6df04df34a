"""Prometheus metrics, defined once; each service process exposes its own at `/metrics`."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "video2mp3_http_requests_total",
    "HTTP requests answered, by route template and status.",
    ["service", "route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "video2mp3_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response starts).",
    ["service", "route", "method"],
)
UPLOAD_BYTES = Counter("video2mp3_upload_bytes_total", "Bytes of uploads stored.")
JOBS_FINISHED = Counter(
    "video2mp3_jobs_finished_total", "Jobs that reached a final status.", ["status"]
)
CONVERSION_SECONDS = Histogram(
    "video2mp3_conversion_seconds",
    "Wall time of one conversion (probe, FFmpeg, storing the output).",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
CONVERSION_SPEED = Histogram(
    "video2mp3_conversion_speed_factor",
    "Media seconds converted per wall-clock second.",
    buckets=(1, 5, 10, 25, 50, 100, 200, 400, 800, 1600),
)
QUEUE_DEPTH = Gauge("video2mp3_queue_depth", "Messages waiting in a queue.", ["queue"])
FFMPEG_FAILURES = Counter(
    "video2mp3_ffmpeg_failures_total", "Conversions that failed, by error code.", ["code"]
)
EMAILS = Counter("video2mp3_emails_total", "Emails by outcome.", ["result"])


class MetricsMiddleware:
    """Counts and times requests by route template (never by raw path: ids would explode it)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                HTTP_DURATION.labels(self.service, _route(scope), scope["method"]).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            HTTP_REQUESTS.labels(self.service, _route(scope), scope["method"], str(status)).inc()


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


async def metrics_endpoint(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
