"""With OTEL_EXPORTER_OTLP_ENDPOINT set, one trace follows a job from the upload request
through the converter to the notification (the context rides in the event envelope)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import StackFactory
from tests.e2e.test_pipeline import upload, wait_final
from tests.faults.conftest import client_and_user
from tests.support.asgi import serving
from tests.support.media import MediaFactory
from tests.support.net import free_port
from tests.support.smtp import SmtpCatcher

Span = tuple[str, str, str]  # service, trace id, span name


@contextlib.asynccontextmanager
async def otlp_receiver() -> AsyncIterator[tuple[str, list[Span]]]:
    """A real OTLP/HTTP endpoint (protobuf), keeping what it receives."""
    spans: list[Span] = []

    async def traces(request: Request) -> Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.body())
        for resource_spans in export.resource_spans:
            service = next(
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    spans.append((service, span.trace_id.hex(), span.name))
        return Response(b"", media_type="application/x-protobuf")

    port = free_port()
    app = Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])
    async with serving(uvicorn.Config(app, port=port, log_level="warning", lifespan="off")):
        yield f"http://127.0.0.1:{port}", spans


async def test_one_trace_from_upload_to_email(
    private_stack: StackFactory, smtp: SmtpCatcher, media: MediaFactory
) -> None:
    async with otlp_receiver() as (endpoint, spans):
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        async with (
            private_stack(smtp.url, **env) as stack,
            client_and_user(stack) as (client, user),
        ):
            response = await upload(client, user, media.h264_aac(2))
            job = await wait_final(client, user, response.json()["id"])
            assert job["status"] == "completed"
            deadline = time.monotonic() + 30
            while True:
                uploads = [
                    s for s in spans if s[0] == "video2mp3-gateway" and s[2] == "POST /v1/jobs"
                ]
                if uploads:
                    trace_id = uploads[0][1]
                    services = {s[0] for s in spans if s[1] == trace_id}
                    if {"video2mp3-converter", "video2mp3-notification"} <= services:
                        break
                if time.monotonic() > deadline:
                    pytest.fail("\n".join(map(str, (s for s in spans if "readyz" not in s[2]))))
                await asyncio.sleep(0.2)
    names = {s[2] for s in spans if s[1] == trace_id}
    assert "consume job.submitted" in names
    assert "consume job.completed" in names
