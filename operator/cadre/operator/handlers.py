"""The operator's kopf handlers: thin, level-based, every write safe to repeat.

- Agent: keep its harness (ServiceAccount, Role, RoleBinding, StatefulSet) as the builders say;
  ``Ready`` says whether the key's Secret exists and the harness pod is ready, rechecked on a
  timer so it recovers by itself.
- Task: accept it for its Agent; when its session asks for hands, build its sandbox and, once
  the pod is ready, report where it is; when the Task ends, remove the sandbox.

Teams (delegation, children, waiting) are in ``team_handlers``.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn, cast

import kopf

from cadre.api import GROUP, VERSION
from cadre.api.agent import AgentSpec
from cadre.api.conditions import merge_condition
from cadre.api.review import awaiting_screening
from cadre.operator import apply, metrics, settings
from cadre.operator.agent_status import agent_counts, memory_size
from cadre.operator.harness_builders import AgentTarget, HarnessDefaults, build_harness_objects
from cadre.operator.objects import (
    AGENT_LABEL,
    COMPONENT_LABEL,
    DEPTH_ANNOTATION,
    TASK_LABEL,
    TEAM_LABEL,
    harness_name,
    sandbox_name,
)
from cadre.operator.sandbox_builders import (
    SandboxDefaults,
    SandboxTarget,
    build_sandbox_objects,
    build_sandbox_service_account,
)
from cadre.operator.settings import BACKOFF
from cadre.operator.team_handlers import reconcile_delegations, retry_review, unanswered

Obj = dict[str, Any]
FINAL = ("Succeeded", "Failed", "Cancelled")
log = logging.getLogger(__name__)


SETTINGS = settings.from_env(os.environ)
"""Read once at import: a bad value stops the operator before it reconciles anything."""


def harness_defaults() -> HarnessDefaults:
    return SETTINGS.harness


def sandbox_defaults() -> SandboxDefaults:
    return SETTINGS.sandbox


def _set(
    status: kopf.Status, kind: str, ok: bool, reason: str, message: str, generation: Any
) -> list[Obj]:
    """The Task's or Agent's conditions with one set (merge patches replace lists: send all)."""
    return merge_condition(
        list(status.get("conditions") or []), kind, ok, reason, message,
        now=datetime.now(UTC), observed_generation=generation,
    )  # fmt: skip


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = "cadre.dev/operator"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="cadre.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="cadre.dev", key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    port = int(os.environ.get("CADRE_METRICS_PORT", "0") or 0)
    if port:
        metrics.serve(port)


def counted(handler: Callable[..., Any]) -> Callable[..., Any]:
    """Count a handler's failures by reason (then let kopf retry or report as usual)."""

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except Exception as err:
            reason = str(getattr(err, "status", "") or type(err).__name__)
            metrics.RECONCILE_ERRORS.labels(handler.__name__, reason).inc()
            raise

    return wrapper


# ---------------------------------------------------------------------------------------------
# Agents


def _agent_readiness(namespace: str, name: str, spec: Obj) -> tuple[bool, str, str]:
    secret_name = spec["apiKeySecretRef"]["name"]
    if apply.get_secret_version(namespace, secret_name) is None:
        return False, "SecretMissing", f'the Secret "{secret_name}" with the API key does not exist'
    ready = apply.statefulset_ready(namespace, harness_name(name))
    if not ready:
        return False, "HarnessNotReady", "the harness pod is not ready yet"
    return True, "HarnessRunning", "the harness is running"


@kopf.on.resume(GROUP, VERSION, "agents", id="agent-harness", backoff=BACKOFF)
@kopf.on.create(GROUP, VERSION, "agents", id="agent-harness", backoff=BACKOFF)
@kopf.on.update(GROUP, VERSION, "agents", id="agent-harness", field="spec", backoff=BACKOFF)
@counted
def reconcile_agent(
    body: kopf.Body,
    spec: kopf.Spec, name: str, namespace: str | None, uid: str, meta: kopf.Meta,
    status: kopf.Status, patch: kopf.Patch, **_: Any,
) -> None:  # fmt: skip
    assert namespace is not None  # Agents are namespaced
    parsed = AgentSpec.model_validate(dict(spec))
    generation = meta.get("generation")
    version = apply.get_secret_version(namespace, parsed.api_key_secret_ref.name)
    if version is None:
        message = f'the Secret "{parsed.api_key_secret_ref.name}" with the API key does not exist'
        patch.status["conditions"] = _set(
            status, "Ready", False, "SecretMissing", message, generation
        )
        kopf.warn(body, reason="SecretMissing", message=message)
        raise kopf.TemporaryError(message, delay=5)
    target = AgentTarget(namespace, name, uid, dict(spec), version)
    for obj in build_harness_objects(target, harness_defaults()):
        apply.ensure(obj)
    patch.status["observedGeneration"] = generation
    kopf.info(body, reason="HarnessReconciled", message=f"{harness_name(name)} matches the Agent")


@kopf.index(GROUP, VERSION, "tasks")
def tasks_by_agent(
    namespace: str | None, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], str] | None:
    """Each Task's phase under its Agent, kept in memory by kopf from the watch it runs anyway:
    the Agent's counts cost no request."""
    agent = status.get("agent")
    if not agent or namespace is None:
        return None
    return {(namespace, str(agent)): str(status.get("phase") or "Pending")}


# kopf passes an index to handlers under its function's name (tasks_by_agent, memory_sizes).
@kopf.index("", "v1", "configmaps", labels={"app.kubernetes.io/name": "cadre-memory"})
def memory_sizes(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[tuple[str, str], int] | None:
    agent = labels.get(AGENT_LABEL)
    size = memory_size(((body.get("data") or {}).get("entries.yaml")) or "")
    if not agent or namespace is None or size is None:
        return None
    return {(namespace, agent): size}


@kopf.timer(GROUP, VERSION, "agents", interval=2.0, id="agent-ready", backoff=BACKOFF)
@counted
def refresh_agent_ready(
    spec: kopf.Spec,
    name: str,
    namespace: str | None,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    tasks_by_agent: kopf.Index[tuple[str, str], str],
    memory_sizes: kopf.Index[tuple[str, str], int],
    tasks_to_retry: kopf.Index[tuple[str, str], str],
    **_: Any,
) -> None:
    assert namespace is not None  # Agents are namespaced
    key = (namespace, name)
    if key in tasks_to_retry:
        retry_stragglers(namespace, sorted(set(tasks_to_retry[key])))
    phases = list(tasks_by_agent[key]) if key in tasks_by_agent else []
    sizes = list(memory_sizes[key]) if key in memory_sizes else []
    counts = agent_counts(phases, sizes[0] if sizes else 0)
    for field, value in counts.items():
        if status.get(field) != value:
            patch.status[field] = value
    ok, reason, message = _agent_readiness(namespace, name, dict(spec))
    current = list(status.get("conditions") or [])
    old = next((c for c in current if c.get("type") == "Ready"), None)
    if (
        old is not None
        and old.get("status") == ("True" if ok else "False")
        and old.get("reason") == reason
    ):
        return
    patch.status["conditions"] = _set(status, "Ready", ok, reason, message, meta.get("generation"))


# ---------------------------------------------------------------------------------------------
# Tasks


@kopf.on.resume(GROUP, VERSION, "tasks", id="task-accept", backoff=BACKOFF)
@kopf.on.create(GROUP, VERSION, "tasks", id="task-accept", backoff=BACKOFF)
@counted
def accept_task(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    **_: Any,
) -> None:
    if status.get("phase") in FINAL:
        return
    generation = meta.get("generation")
    namespace = meta.get("namespace") or ""
    agent = spec.get("assignee", {}).get("agent")
    team = spec.get("assignee", {}).get("team") or meta.get("labels", {}).get(TEAM_LABEL)

    def refuse(reason: str, message: str) -> NoReturn:
        patch.status["conditions"] = _set(status, "Accepted", False, reason, message, generation)
        patch.status["phase"] = "Pending"
        kopf.warn(body, reason=reason, message=message)
        raise kopf.TemporaryError(message, delay=10)  # it may yet be created

    if not agent:
        found = apply.get_team(namespace, team or "")
        if found is None:
            refuse("TeamNotFound", f'the Team "{team}" does not exist in namespace "{namespace}"')
        agent = found["spec"]["lead"]
    if apply.get_agent(namespace, agent) is None:
        refuse("AgentNotFound", f'the Agent "{agent}" does not exist in namespace "{namespace}"')
    if team and status.get("team") != team:
        patch.status["team"] = team
    depth = meta.get("annotations", {}).get(DEPTH_ANNOTATION)
    if depth and int(status.get("depth") or 0) != int(depth):
        patch.status["depth"] = int(depth)
    if not status.get("agent"):
        patch.status["agent"] = agent
    if not status.get("phase"):
        patch.status["phase"] = "Pending"
    message = f'the Agent "{agent}" works this Task'
    if not any(c.get("type") == "Accepted" for c in status.get("conditions") or []):
        kopf.info(body, reason="Accepted", message=message)
    patch.status["conditions"] = _set(
        status, "Accepted", True, "AgentAssigned", message, meta.get("generation")
    )


def _model_of(namespace: str) -> Callable[[str], str]:
    def model(agent: str) -> str:
        found = apply.get_agent(namespace, agent)
        return str(found["spec"].get("model", "")) if found else ""

    return model


@kopf.on.event(GROUP, VERSION, "tasks", id="task-sandbox")
@counted
def sandbox_for_task(body: kopf.Body, type: str | None, **_: Any) -> None:
    """Level-based: whatever the event, make the sandbox match what the Task's status says."""
    metrics.observe_task(dict(body), _model_of(body["metadata"]["namespace"]), type == "DELETED")
    if type != "DELETED":
        reconcile_sandbox(dict(body))


def sandbox_out_of_step(status: Obj) -> bool:
    """The sandbox is not yet what the Task's status asks for: requested but not ready, or
    the Task ended and its sandbox is still recorded."""
    session = status.get("session") or {}
    if status.get("phase") in FINAL:
        return bool(session.get("sandboxPod"))
    return bool(session.get("sandboxRequested")) and not session.get("sandboxReady")


@kopf.index(GROUP, VERSION, "tasks")
def tasks_to_retry(
    namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[tuple[str, str], str] | None:
    """Tasks whose sandbox is out of step, whose delegation requests wait for an answer, or
    whose delivery waits for the Team's reviewer, under their Agent: what a pass cut short by
    an API error (or a review that ended without a verdict) may have left behind."""
    agent = status.get("agent")
    if not agent or namespace is None:
        return None
    reviewing = awaiting_screening({"spec": dict(spec), "status": dict(status)})
    if sandbox_out_of_step(dict(status)) or unanswered(dict(status)) or reviewing:
        return {(namespace, str(agent)): name}
    return None


STRAGGLER_SECONDS = 3.0
_STRAGGLING: dict[tuple[str, str], float] = {}
"""When each Task was first seen out of step by the sweep (operator memory; a restart only
delays a retry by STRAGGLER_SECONDS)."""


def retry_stragglers(namespace: str, names: list[str]) -> None:
    """kopf does not retry event handlers: a sandbox pass or a delegation answer cut short by
    an API error (a 500, a 429) would wait for the Task's next event, which may never come
    while its session waits. The Agent's timer calls this for its Tasks in ``tasks_to_retry``:
    each is read again and the pass repeated, touching nothing while a sandbox pod exists and
    is only starting. (Per-Task kopf timers did the same but delayed every sandbox by their
    start-up; this sweep costs a normal Task nothing.)"""
    now = time.monotonic()
    for gone in [k for k in _STRAGGLING if k[0] == namespace and k[1] not in names]:
        del _STRAGGLING[gone]
    for name in names:
        # A pass in flight right now (the event handler's) is not a straggler: only what has
        # stayed out of step for a while is retried, so a normal Task costs nothing extra.
        if now - _STRAGGLING.setdefault((namespace, name), now) < STRAGGLER_SECONDS:
            continue
        try:
            task = apply.get_task(namespace, name)
            if task is None:
                continue
            status = task.get("status") or {}
            if unanswered(status):
                reconcile_delegations(task)
            if awaiting_screening(task):
                retry_review(task)
            if sandbox_out_of_step(status):
                _retry_sandbox(task)
        except Exception:  # the next sweep tries again; the Agent's readiness goes on
            log.warning("retrying Task %s/%s failed", namespace, name, exc_info=True)


def _retry_sandbox(task: Obj) -> None:
    status = task.get("status") or {}
    namespace, name = task["metadata"]["namespace"], task["metadata"]["name"]
    if status.get("phase") not in FINAL:
        pod = apply.get_pod(namespace, sandbox_name(name))
        if pod is not None and not pod["metadata"].get("deletionTimestamp"):
            if _pod_ready(pod):
                report_sandbox(namespace, name)  # ready but never reported: say so now
            return
    reconcile_sandbox(task)


def _pod_ready(pod: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def _ref(body: Obj) -> kopf.Body:
    """A plain Task dict as kopf's event poster wants it (it reads kind, name, uid, namespace)."""
    return cast(kopf.Body, body)


def reconcile_sandbox(body: Obj) -> None:
    meta, status = body["metadata"], body.get("status") or {}
    session = status.get("session") or {}
    namespace, name = meta["namespace"], meta["name"]
    if meta.get("deletionTimestamp"):
        return
    pod = apply.get_pod(namespace, sandbox_name(name))
    if status.get("phase") in FINAL:
        # Read before writing: later events of an ended Task cost no deletes. The pod goes
        # first in the same pass as the rest, so a pod already going means the pass ran (what
        # a crash mid-pass leaves is owned by the Task and goes with it).
        if pod is None and not session.get("sandboxPod"):
            return
        if pod is not None and pod["metadata"].get("deletionTimestamp"):
            return
        agent = apply.get_agent(namespace, status.get("agent") or "")
        retain = (
            agent is not None
            and AgentSpec.model_validate(agent["spec"]).sandbox.workspace.retention == "Retain"
        )
        apply.delete_sandbox(namespace, name, keep_workspace=retain)
        gone = {"sandboxReady": False, "sandboxAddress": None, "sandboxPod": None}
        apply.patch_task_session(namespace, name, gone)
        kept = "kept" if retain else "deleted"
        kopf.info(_ref(body), reason="SandboxDeleted", message=f"the Task ended; workspace {kept}")
        return
    if not session.get("sandboxRequested") or not session.get("sandboxTokenSHA256"):
        return
    if not session.get("sandboxReady"):
        metrics.sandbox_requested(f"{namespace}/{name}")
    if pod is not None and not pod["metadata"].get("deletionTimestamp"):
        report_sandbox(namespace, name)  # it exists: only say where
        return
    agent_name = status.get("agent") or body["spec"].get("assignee", {}).get("agent")
    agent = apply.get_agent(namespace, agent_name)
    if agent is None:
        return
    parsed = AgentSpec.model_validate(agent["spec"])
    target = SandboxTarget(
        namespace, name, meta["uid"], agent_name, parsed.sandbox, session["sandboxTokenSHA256"]
    )
    apply.ensure_exists(build_sandbox_service_account(namespace))  # shared by the namespace
    for obj in build_sandbox_objects(target, sandbox_defaults()):
        apply.ensure(obj)
    kopf.info(
        _ref(body), reason="SandboxCreated", message=f"{sandbox_name(name)} for the session's tools"
    )
    report_sandbox(namespace, name)


def report_sandbox(namespace: str, task: str) -> None:
    """Tell the session where its sandbox is, once its pod is ready (and when it moves)."""
    pod = apply.get_pod(namespace, sandbox_name(task))
    ready = pod is not None and _pod_ready(pod)
    address = f"{pod['status']['podIP']}:{sandbox_defaults().port}" if ready and pod else None
    if ready:
        metrics.sandbox_ready(f"{namespace}/{task}")
    fields: Obj = {"sandboxReady": ready, "sandboxAddress": address}
    if ready or pod is None:
        # A pod that is only starting changes nothing the session acts on: no write for it.
        fields["sandboxPod"] = sandbox_name(task) if pod else None
    apply.patch_task_session(namespace, task, fields)


@kopf.on.event("", "v1", "pods", labels={COMPONENT_LABEL: "sandbox"}, id="sandbox-pod")
def sandbox_pod_changed(body: kopf.Body, type: str | None, **_: Any) -> None:
    task = body["metadata"].get("labels", {}).get(TASK_LABEL)
    if not task:
        return
    namespace = body["metadata"]["namespace"]
    if type == "DELETED":
        # A sandbox that died while its Task still works comes back (the workspace is kept).
        found = apply.get_task(namespace, task)
        if found is not None:
            reconcile_sandbox(found)
            return
    report_sandbox(namespace, task)
