"""A harness's live metrics (``GET /metrics`` on its events port), counted from the session
log's events as they are written: tokens and cost as each model response arrives (not when the
Task ends), model call durations and time to first token, model errors by kind, tool calls by
tool and outcome, sessions running and idle (and why: a tool call waiting for a person, a
delivery in review), review verdicts and limits hit.
Replayed events are never counted again: only what a session appends now is.

Names follow Prometheus conventions and, where they exist, the OpenTelemetry GenAI semantic
conventions (``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``, provider
``anthropic``) as the OpenTelemetry Prometheus exporter writes them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cadre import __version__
from cadre.harness.pricing import Prices, cost
from cadre.harness.sessionlog import Event

TOKEN_KINDS = {
    "input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation_input_tokens": "cache_write",
}
LIMIT_REASONS = frozenset({"MaxTurnsReached", "MaxTokensReached", "MaxCostReached",
                           "TimeoutReached", "ContextWindowExceeded"})  # fmt: skip
_GEN_AI = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
_WHO = ("namespace", "team", "agent", "model")
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
_SECONDS_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92)  # fmt: skip


class HarnessMetrics:
    """One harness process's metrics, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.token_usage = Histogram(
            "gen_ai_client_token_usage", "Tokens per model call (OpenTelemetry GenAI).",
            [*_GEN_AI, "gen_ai_token_type"], buckets=_TOKEN_BUCKETS, registry=r,
        )  # fmt: skip
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Model call duration, retries by the SDK included (OpenTelemetry GenAI).",
            [*_GEN_AI, "error_type"], buckets=_SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self.tokens = Counter(
            "cadre_model_tokens", "Tokens used, as each model response arrives.",
            [*_WHO, "kind"], registry=r,
        )  # fmt: skip
        self.cost = Counter(
            "cadre_model_cost_usd", "What model calls cost, as each response arrives.",
            list(_WHO), registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "cadre_model_errors", "Model calls failed after the SDK's retries, by kind.",
            [*_WHO, "error_type"], registry=r,
        )  # fmt: skip
        self.tool_calls = Counter(
            "cadre_tool_calls", "Tool calls answered, by tool and outcome.",
            ["namespace", "team", "agent", "tool", "outcome"], registry=r,
        )  # fmt: skip
        self.first_token = Histogram(
            "cadre_model_time_to_first_token_seconds",
            "From a streamed model call's request to its first event.",
            list(_WHO), buckets=_SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self.sessions = Gauge(
            "cadre_sessions",
            "Sessions of this harness by state: running, or idle and why (AwaitingToolApproval "
            "is a tool call waiting for a person; AwaitingReview a delivery being reviewed).",
            ["namespace", "team", "agent", "state", "reason"], registry=r,
        )  # fmt: skip
        self.reviews = Counter(
            "cadre_reviews", "Verdicts on this Agent's deliveries (Accepted, ChangesRequested).",
            ["namespace", "team", "agent", "verdict"], registry=r,
        )  # fmt: skip
        self.limit_hits = Counter(
            "cadre_limit_hits",
            "Sessions ended by a limit (MaxTurnsReached, MaxTokensReached, MaxCostReached, "
            "TimeoutReached, ContextWindowExceeded).",
            ["namespace", "team", "agent", "reason"], registry=r,
        )  # fmt: skip
        self.egress = Counter(
            "cadre_egress_connections",
            "Connections from this Agent's sandboxes through its egress proxy, by decision"
            " (allowed, refused) and whether a credential was applied.",
            ["namespace", "agent", "decision", "credential"], registry=r,
        )  # fmt: skip
        self.egress_bytes = Counter(
            "cadre_egress_bytes", "Bytes through the egress proxy, by direction (out, in).",
            ["namespace", "agent", "direction"], registry=r,
        )  # fmt: skip
        self.session_states: dict[str, tuple[str, str]] = {}
        """Per Task, the (state, reason) its session is counted under in ``cadre_sessions``."""
        self.build = Gauge("cadre_build_info", "Cadre's version.", ["version", "component"],
                           registry=r)  # fmt: skip
        self.build.labels(__version__, "harness").set(1)

    def observer(
        self, labels: SessionLabels, prices: Prices, task: str = ""
    ) -> Callable[[list[Event]], None]:
        """What the session log calls with each batch of events it writes. A Task's session
        is taken up again (after an approval, a review, a restart of its work) by a new
        observer: where it was counted stays with the Task, in ``session_states``."""
        return _Observer(self, labels, prices, task)


@dataclass(frozen=True)
class SessionLabels:
    namespace: str
    team: str
    agent: str
    model: str

    def who(self) -> tuple[str, str, str, str]:
        return (self.namespace, self.team, self.agent, self.model)


@dataclass
class _Observer:
    metrics: HarnessMetrics
    labels: SessionLabels
    prices: Prices
    task: str
    started: dict[int, float] = field(default_factory=dict)
    """When each model call (by turn) was logged as started."""
    tools: dict[str, str] = field(default_factory=dict)
    """Tool names by call id, from ``agent.tool_use``."""

    def _become(self, state: tuple[str, str] | None) -> None:
        who = (self.labels.namespace, self.labels.team, self.labels.agent)
        states = self.metrics.session_states
        before = states.pop(self.task, None)
        if before is not None:
            self.metrics.sessions.labels(*who, *before).dec()
        if state is not None:
            self.metrics.sessions.labels(*who, *state).inc()
            states[self.task] = state

    def __call__(self, events: list[Event]) -> None:
        for event in events:
            self._count(event)

    def _usage(self, usage: dict[str, int]) -> None:
        m, who = self.metrics, self.labels.who()
        gen_ai = ("chat", "anthropic", self.labels.model)
        for key, kind in TOKEN_KINDS.items():
            value = int(usage.get(key) or 0)
            m.tokens.labels(*who, kind).inc(value)
        m.token_usage.labels(*gen_ai, "input").observe(int(usage.get("input_tokens") or 0))
        m.token_usage.labels(*gen_ai, "output").observe(int(usage.get("output_tokens") or 0))
        m.cost.labels(*who).inc(float(cost(self.prices, usage)))

    def _count(self, event: Event) -> None:
        kind, m = event["type"], self.metrics
        gen_ai = ("chat", "anthropic", self.labels.model)
        who3 = (self.labels.namespace, self.labels.team, self.labels.agent)
        if kind in ("session.created", "session.resumed", "session.status_running"):
            self._become(("running", ""))
        elif kind == "session.status_idle":
            self._become(("idle", str(event.get("reason") or "")))
        elif kind == "session.status_terminated":
            self._become(None)
            if event.get("reason") in LIMIT_REASONS:
                m.limit_hits.labels(*who3, str(event["reason"])).inc()
        elif kind == "user.review":
            verdict = "Accepted" if event.get("accepted") else "ChangesRequested"
            m.reviews.labels(*who3, verdict).inc()
        elif kind == "span.model_request_start":
            self.started[int(event["turn"])] = float(event["time"])
        elif kind == "span.model_request_end":
            self._usage(event["usage"])
            start = self.started.pop(int(event["turn"]), None)
            if start is not None:
                m.duration.labels(*gen_ai, "").observe(max(0.0, float(event["time"]) - start))
            if event.get("stop_reason") == "refusal":  # answered, but declined: a model error
                m.errors.labels(*self.labels.who(), "Refusal").inc()
            if event.get("first_token_seconds") is not None:
                m.first_token.labels(*self.labels.who()).observe(
                    float(event["first_token_seconds"])
                )
        elif kind == "span.model_request_error":
            reason = str(event.get("reason") or "Unknown")
            m.errors.labels(*self.labels.who(), reason).inc()
            start = self.started.pop(int(event.get("turn") or 0), None)
            if start is not None:
                m.duration.labels(*gen_ai, reason).observe(max(0.0, float(event["time"]) - start))
        elif kind in ("session.compacted", "session.lesson"):
            self._usage(event.get("usage") or {})
        elif kind == "agent.tool_use":
            self.tools[event["tool_use_id"]] = str(event["name"])
        elif kind == "agent.tool_result":
            tool = self.tools.pop(event["tool_use_id"], "")
            if tool:  # a call denied before it was sent is a decision, not a tool call
                outcome = "error" if event.get("is_error") else "ok"
                who = (self.labels.namespace, self.labels.team, self.labels.agent)
                m.tool_calls.labels(*who, tool, outcome).inc()
