"""Traces (OpenTelemetry): a request's path through the gateway, the worker, the projector and the
push, as one trace.

The context travels with the work as a W3C ``traceparent`` string: in the command envelope
(`CommandEnvelope.traceparent`, filled by the store's sender from the current span), in the event
envelopes the worker appends, and in the change its append publishes. Each process adds its
span as a child of the one it received:

- ``sessiond.gateway.request`` (the gateway, per HTTP request or WS message);
- ``sessiond.worker.command`` (the worker: decide and append one command, which publishes its
  change);
- ``sessiond.gateway.push`` (a gateway pushing the change to its connections).

Off by default: until `setup_tracing` installs a provider, `tracer()` is OpenTelemetry's no-op
tracer and `enabled()` is False, so the hot paths skip span work entirely (a traceparent that
arrives is still passed along). The CLI installs one exporting over OTLP/HTTP when
``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (`Settings.otlp_endpoint`); tests install one with an
in-memory exporter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "attributes",
    "context_of",
    "enabled",
    "setup_tracing",
    "shutdown_tracing",
    "span",
    "traceparent",
    "traceparent_of",
    "tracer",
]

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()


def setup_tracing(
    service: str, *, otlp_endpoint: str = "", exporter: SpanExporter | None = None
) -> bool:
    """Install this process's tracer: spans go to `exporter` (synchronously: tests), else to
    the OTLP/HTTP collector at `otlp_endpoint` (batched, in the background); with neither,
    tracing stays off. Returns whether it is on."""
    global _provider, _tracer
    shutdown_tracing()
    if exporter is None and not otlp_endpoint:
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": f"sessiond-{service}"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _provider, _tracer = provider, provider.get_tracer("sessiond")
    return True


def shutdown_tracing() -> None:
    """Flush and drop the installed tracer (at process exit; tests between runs)."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer = None, trace.NoOpTracer()


def enabled() -> bool:
    return _provider is not None


def tracer() -> trace.Tracer:
    return _tracer


def context_of(traceparent: str) -> Context | None:
    """The context a received ``traceparent`` names (None when empty: a new trace)."""
    if not traceparent:
        return None
    return _propagator.extract({"traceparent": traceparent})


def traceparent_of(span: Span) -> str:
    """The ``traceparent`` that makes the receiver's span a child of `span` ("" for a span
    that records nothing)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def traceparent() -> str:
    """The ``traceparent`` of the current span ("" outside one): what a sender puts in the
    command envelope."""
    return traceparent_of(trace.get_current_span())


def attributes(**values: Any) -> dict[str, Any]:
    """Span attributes without the empty ones."""
    return {f"sessiond.{k}": v for k, v in values.items() if v not in ("", None)}


@contextlib.contextmanager
def span(
    name: str, *, parent: str = "", kind: SpanKind = SpanKind.INTERNAL, **attrs: Any
) -> Iterator[Span | None]:
    """A span around the block, current inside it (a command sent meanwhile carries it), child
    of the `parent` traceparent when given (a client's ``traceparent`` header), else of the
    current span; None, and no work at all, while tracing is off."""
    if _provider is None:
        yield None
        return
    with _tracer.start_as_current_span(
        name, context=context_of(parent), kind=kind, attributes=attributes(**attrs)
    ) as current:
        yield current
