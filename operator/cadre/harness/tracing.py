"""OpenTelemetry traces of a harness's sessions, off unless an OTLP endpoint is configured
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; the operator sets
the first from its ``CADRE_OTLP_ENDPOINT``). Spans are made from the session log's events as
they are written (as the metrics are), so the session code knows nothing of tracing, and a
resumed session's earlier events are never traced twice.

One trace per Task tree (ids from api/tracing.py): each Task has its span ``task NAME``, sent
once by the harness that ends it, from the Task's creation to its end, under the Task it works
for; under it, an ``invoke_agent AGENT`` span each time a session works it (until it ends or
pauses), and under that ``chat MODEL`` per model call and ``execute_tool TOOL`` per tool call,
with the OpenTelemetry GenAI attributes. A harness killed mid-session loses the spans it had
not sent; the log, not the trace, is the record."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, Status, StatusCode, TraceFlags

from cadre import __version__
from cadre.api.tracing import task_span_id, trace_of
from cadre.api.types import Obj
from cadre.harness.sessionlog import Event

ENDPOINT_ENVS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
EXPORT_DELAY_MS = 1000
_FORCED: contextvars.ContextVar[tuple[int | None, int | None]] = contextvars.ContextVar(
    "cadre_forced_ids", default=(None, None)
)


class _TaskIds(IdGenerator):
    """Random ids, except for a Task's own span, whose ids every harness computes alike."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        return _FORCED.get()[1] or self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        return _FORCED.get()[0] or self._random.generate_trace_id()


@contextmanager
def _forced(trace_id: int | None, span_id: int) -> Iterator[None]:
    token = _FORCED.set((trace_id, span_id))
    try:
        yield
    finally:
        _FORCED.reset(token)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def _remote(trace_id: int, span_id: int) -> Any:
    context = SpanContext(trace_id, span_id, is_remote=True,
                          trace_flags=TraceFlags(TraceFlags.SAMPLED))  # fmt: skip
    return trace.set_span_in_context(NonRecordingSpan(context))


class Tracing:
    """The harness's tracer provider; ``observer`` per session, ``shutdown`` at exit."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("cadre.harness", __version__)

    def observer(self, task: Obj, agent: str, model: str) -> Callable[[list[Event]], None]:
        return _SessionSpans(self.tracer, task, agent, model)

    def shutdown(self) -> None:
        self.provider.shutdown()  # sends what is queued


def from_env(env: Mapping[str, str], agent: str, namespace: str) -> Tracing | None:
    """Tracing when an OTLP endpoint is configured, else None (no tracing at all)."""
    if not any(env.get(name) for name in ENDPOINT_ENVS):
        return None
    resource = Resource.create({
        "service.name": "cadre-harness", "service.version": __version__,
        "k8s.namespace.name": namespace, "gen_ai.agent.name": agent})  # fmt: skip
    provider = TracerProvider(resource=resource, id_generator=_TaskIds())
    # The exporter reads the endpoint, headers and timeout from the standard variables.
    exporter = BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=EXPORT_DELAY_MS)
    provider.add_span_processor(exporter)
    return Tracing(provider)


@dataclass
class _SessionSpans:
    tracer: trace.Tracer
    task: Obj
    agent: str
    model: str
    session: Span | None = None
    calls: dict[int, Span] = field(default_factory=dict)
    tools: dict[str, Span] = field(default_factory=dict)

    def __call__(self, events: list[Event]) -> None:
        for event in events:
            self._see(event)

    @property
    def _uid(self) -> str:
        return str(self.task["metadata"]["uid"])

    def _session(self, at: float) -> Span:
        if self.session is None:
            trace_id, _ = trace_of(self.task)
            meta = self.task["metadata"]
            self.session = self.tracer.start_span(
                f"invoke_agent {self.agent}", context=_remote(trace_id, task_span_id(self._uid)),
                kind=trace.SpanKind.INTERNAL, start_time=_ns(at),
                attributes={"gen_ai.operation.name": "invoke_agent",
                            "gen_ai.provider.name": "anthropic", "gen_ai.agent.name": self.agent,
                            "gen_ai.request.model": self.model, "cadre.task": meta["name"],
                            "k8s.namespace.name": meta.get("namespace", "")},
            )  # fmt: skip
        return self.session

    def _child(self, name: str, at: float, attributes: dict[str, Any]) -> Span:
        parent = trace.set_span_in_context(self._session(at))
        return self.tracer.start_span(name, context=parent, kind=trace.SpanKind.CLIENT,
                                      start_time=_ns(at), attributes=attributes)  # fmt: skip

    def _close_session(self, at: float, reason: str) -> None:
        for span in [*self.calls.values(), *self.tools.values()]:
            span.end(end_time=_ns(at))
        self.calls.clear()
        self.tools.clear()
        if self.session is not None:
            self.session.set_attribute("cadre.session.stop", reason)
            self.session.end(end_time=_ns(at))
            self.session = None

    def _see(self, event: Event) -> None:
        kind, at = event.get("type"), float(event.get("time") or 0)
        if kind in ("session.created", "session.resumed", "session.status_running"):
            self._session(at)
        elif kind == "span.model_request_start":
            self.calls[int(event["turn"])] = self._child(f"chat {self.model}", at, {
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
                "gen_ai.request.model": self.model})  # fmt: skip
        elif kind == "span.model_request_end":
            span = self.calls.pop(int(event["turn"]), None)
            if span is not None:
                usage = {k: int(v or 0) for k, v in (event.get("usage") or {}).items()}
                cached = usage.get("cache_read_input_tokens", 0)
                written = usage.get("cache_creation_input_tokens", 0)
                span.set_attributes({
                    # The conventions count cached input in input_tokens; Anthropic does not.
                    "gen_ai.usage.input_tokens": usage.get("input_tokens", 0) + cached + written,
                    "gen_ai.usage.cache_read.input_tokens": cached,
                    "gen_ai.usage.cache_creation.input_tokens": written,
                    "gen_ai.usage.output_tokens": int(usage.get("output_tokens") or 0),
                    "gen_ai.response.id": str(event.get("message_id") or ""),
                    "gen_ai.response.finish_reasons": [str(event.get("stop_reason") or "")],
                })  # fmt: skip
                span.end(end_time=_ns(at))
        elif kind == "span.model_request_error":
            span = self.calls.pop(int(event.get("turn") or 0), None)
            if span is not None:
                span.set_attribute("error.type", str(event.get("reason") or "Unknown"))
                span.set_status(Status(StatusCode.ERROR, str(event.get("message") or "")))
                span.end(end_time=_ns(at))
        elif kind == "agent.tool_use":
            name = str(event.get("name"))
            self.tools[str(event["tool_use_id"])] = self._child(f"execute_tool {name}", at, {
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": name,
                "gen_ai.tool.call.id": str(event["tool_use_id"])})  # fmt: skip
        elif kind == "agent.tool_result":
            span = self.tools.pop(str(event["tool_use_id"]), None)
            if span is not None:
                if event.get("is_error"):
                    span.set_status(Status(StatusCode.ERROR))
                span.end(end_time=_ns(at))
        elif kind == "session.status_idle":
            self._close_session(at, str(event.get("reason") or "idle"))
        elif kind == "session.status_terminated":
            self._close_session(at, str(event.get("reason") or "ended"))
            self._task_span(event, at)

    def _task_span(self, event: Event, at: float) -> None:
        """The Task's own span, with the ids every harness computes for it."""
        meta = self.task["metadata"]
        trace_id, parent = trace_of(self.task)
        created = meta.get("creationTimestamp")
        start = (
            datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp() if created else at
        )
        context = _remote(trace_id, parent) if parent is not None else None
        with _forced(trace_id, task_span_id(self._uid)):
            span = self.tracer.start_span(
                f"task {meta['name']}", context=context, start_time=_ns(min(start, at)),
                attributes={"cadre.task": meta["name"], "gen_ai.agent.name": self.agent,
                            "k8s.namespace.name": meta.get("namespace", ""),
                            "cadre.outcome": str(event.get("outcome") or ""),
                            "cadre.reason": str(event.get("reason") or "")},
            )  # fmt: skip
        if event.get("outcome") == "Failed":
            span.set_status(Status(StatusCode.ERROR, str(event.get("message") or "")))
        span.end(end_time=_ns(at))
