"""The operator's Prometheus metrics, derived from what it sees of Tasks and sandboxes.

Counters move once per Task, when it ends (tokens and cost are final then), so a Task seen
again after an operator restart is counted again only by that restart's process: Prometheus'
``rate()``/``increase()`` handle counter resets. Names: ``cadre_`` prefix, base units.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from cadre import __version__
from cadre.api.names import TEAM_LABEL
from cadre.api.task import FINAL_PHASES

REGISTRY = CollectorRegistry()

TASKS = Gauge(
    "cadre_tasks", "Tasks by phase, Agent and Team (the Team whose tree a Task is in).",
    ["namespace", "team", "agent", "phase"], registry=REGISTRY,
)  # fmt: skip
SANDBOXES = Gauge(
    "cadre_sandboxes",
    "Live sandboxes (ready, of a Task not ended), per Agent.",
    ["namespace", "agent"], registry=REGISTRY,
)  # fmt: skip
BUDGET_SPENT = Counter(
    "cadre_budget_spent",
    "Tasks cancelled because the tree they work for has spent its maxCostUSD (by the Agent "
    "whose tree it is).",
    ["namespace", "agent"], registry=REGISTRY,
)  # fmt: skip
QUEUE_DEPTH = Gauge(
    "cadre_queue_depth",
    "Tasks accepted for an Agent that no session has taken up yet (phase Pending).",
    ["namespace", "agent"], registry=REGISTRY,
)  # fmt: skip
TASK_DURATION = Histogram(
    "cadre_task_duration_seconds",
    "From a Task's creation to its end.",
    ["agent", "outcome"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf")),
    registry=REGISTRY,
)
TIME_TO_START = Histogram(
    "cadre_task_time_to_start_seconds",
    "From a Task's creation to its harness taking it up (its first model request follows at once).",
    ["agent"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, float("inf")),
    registry=REGISTRY,
)
TOKENS = Counter(
    "cadre_tokens", "Tokens used by ended Tasks.", ["agent", "model", "kind"], registry=REGISTRY
)
COST = Counter("cadre_cost_usd", "US dollars spent by ended Tasks.", ["agent"], registry=REGISTRY)
TASKS_ENDED = Counter(
    "cadre_tasks_ended",
    "Ended Tasks by phase and reason (the Succeeded condition's: Completed, ModelRateLimited, "
    "ContextWindowExceeded, ...).",
    ["agent", "phase", "reason"],
    registry=REGISTRY,
)
COMPACTIONS = Counter(
    "cadre_session_compactions",
    "Context compactions in ended Tasks' sessions.",
    ["agent"],
    registry=REGISTRY,
)
MODEL_ERRORS = Counter(
    "cadre_model_errors",
    "Model calls of ended Tasks that failed after the SDK's retries (and were tried again "
    "or ended the session).",
    ["agent"],
    registry=REGISTRY,
)
RESUMES = Counter(
    "cadre_session_resumes", "Sessions resumed from their log.", ["agent"], registry=REGISTRY
)
SANDBOX_START = Histogram(
    "cadre_sandbox_start_seconds",
    "From a sandbox's request to its pod being ready.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, float("inf")),
    registry=REGISTRY,
)
BUILD = Gauge("cadre_build_info", "Cadre's version.", ["version", "component"],
              registry=REGISTRY)  # fmt: skip
BUILD.labels(__version__, "operator").set(1)
RECONCILE_ERRORS = Counter(
    "cadre_reconcile_errors",
    "Handler failures, by handler and reason.",
    ["handler", "reason"],
    registry=REGISTRY,
)

_phases: dict[str, tuple[str, str, str, str]] = {}  # uid -> (namespace, team, agent, phase)
_ended: set[str] = set()
_sandboxes: dict[str, tuple[str, str]] = {}  # uid -> (namespace, agent) of a live sandbox
_started: set[str] = set()
_resumes: dict[str, int] = {}
_sandbox_requested: dict[str, float] = {}  # "namespace/task" -> when asked
_USAGE_KINDS = {
    "inputTokens": "input",
    "outputTokens": "output",
    "cacheReadInputTokens": "cache_read",
    "cacheCreationInputTokens": "cache_write",
}


def serve(port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - callers pass the pod's
    start_http_server(port, addr=host, registry=REGISTRY)


def _parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (_parse(end) - _parse(start)).total_seconds()


def observe_task(
    body: dict[str, Any], model_of: Callable[[str], str], deleted: bool = False
) -> None:
    """Fold one view of a Task into the metrics (called on every Task event)."""
    meta, status = body["metadata"], body.get("status") or {}
    uid, namespace = meta["uid"], meta["namespace"]
    agent = status.get("agent") or body.get("spec", {}).get("assignee", {}).get("agent") or ""
    team = (body.get("spec", {}).get("assignee", {}).get("team")
            or (meta.get("labels") or {}).get(TEAM_LABEL) or "")  # fmt: skip
    sandbox = _sandboxes.pop(uid, None)
    if sandbox is not None:
        SANDBOXES.labels(*sandbox).dec()
    session = status.get("session") or {}
    live = session.get("sandboxReady") and status.get("phase") not in FINAL_PHASES
    if live and not deleted:
        _sandboxes[uid] = (namespace, agent)
        SANDBOXES.labels(namespace, agent).inc()
    previous = _phases.pop(uid, None)
    if previous is not None:
        TASKS.labels(*previous).dec()
        if previous[3] == "Pending":
            QUEUE_DEPTH.labels(previous[0], previous[2]).dec()
    if deleted:
        return
    _phases[uid] = (namespace, team, agent, status.get("phase") or "Pending")
    TASKS.labels(*_phases[uid]).inc()
    if _phases[uid][3] == "Pending":
        QUEUE_DEPTH.labels(namespace, agent).inc()
    resumes = int((status.get("session") or {}).get("resumes") or 0)
    if resumes > _resumes.get(uid, 0):
        RESUMES.labels(agent).inc(resumes - _resumes.get(uid, 0))
        _resumes[uid] = resumes
    if uid not in _started and status.get("startTime"):
        _started.add(uid)
        waited = _seconds_between(meta.get("creationTimestamp"), status["startTime"])
        if waited is not None:
            TIME_TO_START.labels(agent).observe(max(waited, 0))
    if status.get("phase") in FINAL_PHASES and uid not in _ended:
        _ended.add(uid)
        took = _seconds_between(meta.get("creationTimestamp"), status.get("completionTime"))
        if took is not None:
            TASK_DURATION.labels(agent, status["phase"]).observe(max(took, 0))
        usage = status.get("usage") or {}
        model = model_of(agent)
        for field, kind in _USAGE_KINDS.items():
            TOKENS.labels(agent, model, kind).inc(int(usage.get(field) or 0))
        COST.labels(agent).inc(float(Decimal(str(usage.get("costUSD") or "0"))))
        COMPACTIONS.labels(agent).inc(int(usage.get("compactions") or 0))
        MODEL_ERRORS.labels(agent).inc(int(usage.get("modelErrors") or 0))
        condition: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), {}
        )
        TASKS_ENDED.labels(agent, status["phase"], condition.get("reason") or "").inc()


def sandbox_requested(task: str) -> None:
    _sandbox_requested.setdefault(task, time.monotonic())


def sandbox_ready(task: str) -> None:
    began = _sandbox_requested.pop(task, None)
    if began is not None:
        SANDBOX_START.observe(time.monotonic() - began)
