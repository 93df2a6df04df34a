"""OpenTelemetry tracing: off unless OTEL_EXPORTER_OTLP_ENDPOINT is set.

A job's trace starts at its upload request and follows it through every event: the W3C trace
context rides in the event envelope (`trace`), so each consumer continues the same trace.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Span, SpanKind

_tracer = trace.get_tracer("video2mp3")


def tracing_enabled() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def setup_tracing(service: str) -> None:
    """Install an OTLP/HTTP exporter for this process when an endpoint is configured."""
    if not tracing_enabled():
        return
    # Imported only when used: the SDK and exporter cost start-up time for nothing otherwise.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"video2mp3-{service}"}))
    # The exporter reads the endpoint, headers and timeout from the standard OTEL_* variables.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if callable(shutdown):
        shutdown()


def current_carrier() -> dict[str, str]:
    """The current trace context as W3C headers (empty when nothing is being traced)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL, **attributes: str) -> Iterator[Span]:
    with _tracer.start_as_current_span(name, kind=kind, attributes=attributes) as current:
        yield current


@contextmanager
def continued_span(
    name: str,
    carrier: dict[str, str],
    kind: SpanKind = SpanKind.CONSUMER,
    **attributes: str,
) -> Iterator[Span]:
    """A span that continues the trace a message (or a request's headers) carried."""
    token = context.attach(propagate.extract(carrier))
    try:
        with _tracer.start_as_current_span(name, kind=kind, attributes=attributes) as current:
            yield current
    finally:
        context.detach(token)
