"""The operator's kopf handlers: thin, level-based, every write safe to repeat.

- Agent: keep its harness (ServiceAccount, Role, RoleBinding, StatefulSet) as the builders say;
  ``Ready`` says whether the key's Secret exists and the harness pod is ready, rechecked on a
  timer so it recovers by itself.
- Task: accept it for its Agent.

A Task's sandbox is in ``sandbox_handlers``, the sweep for passes an API error cut short in
``stragglers``, Teams (delegation, children, waiting, reviews) in ``team_handlers``.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

import kopf

from cadre.api import GROUP, VERSION
from cadre.api.agent import AgentSpec, EgressMode
from cadre.api.conditions import merge_condition
from cadre.api.names import (
    AGENT_LABEL,
    DEPTH_ANNOTATION,
    FINALIZER,
    MEMORY_KEY,
    POD_IP_ENV,
    TEAM_LABEL,
    bind_host,
    harness_name,
)
from cadre.api.task import FINAL_PHASES, parent_of
from cadre.api.types import Obj
from cadre.operator import apply, events, metrics
from cadre.operator.agent_status import agent_counts, memory_size
from cadre.operator.cancel import UNTAKEN_PHASES, cancelled_status
from cadre.operator.egress_ca import (
    build_ca_configmap,
    build_ca_secret,
    egress_ca_name,
    new_authority,
)
from cadre.operator.harness_builders import AgentTarget, build_harness_objects
from cadre.operator.model_access import REFUSALS, Refusal, credential_refusal, refusal
from cadre.operator.policy_handlers import policies_for
from cadre.operator.sandbox_handlers import cache_of
from cadre.operator.settings import BACKOFF, Settings
from cadre.operator.state import state_of
from cadre.operator.stragglers import retry_stragglers

log = logging.getLogger(__name__)


def _set(
    status: kopf.Status, kind: str, ok: bool, reason: str, message: str, generation: Any
) -> list[Obj]:
    """The Task's or Agent's conditions with one set (merge patches replace lists: send all)."""
    return merge_condition(
        list(status.get("conditions") or []), kind, ok, reason, message,
        now=datetime.now(UTC), observed_generation=generation,
    )  # fmt: skip


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="cadre.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="cadre.dev", key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    state = state_of(memo)
    if state.metrics_port:
        # On the pod's own address (outside a pod, loopback), as the harness serves its
        # events: in the local cluster, whose pods share the node's network, 0.0.0.0 would
        # take the port from every pod there.
        metrics.serve(state.metrics_port, bind_host(os.environ.get(POD_IP_ENV)))


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


def _refusal(
    namespace: str, spec: AgentSpec, settings: Settings
) -> tuple[Obj | None, Refusal | None]:
    """The key's Secret, and the rule of ``model_access`` the Agent breaks, if any."""
    ref = spec.api_key_secret_ref
    secret = apply.get_secret(namespace, ref.name)
    refused = refusal(secret, ref, spec.base_url, settings.model_endpoints)
    for index, server in enumerate(spec.mcp_servers):
        if refused is not None:
            break
        if server.credential is not None:
            cred = server.credential.secret_ref
            refused = credential_refusal(
                apply.get_secret(namespace, cred.name), cred,
                f"spec.mcpServers[{index}].credential.secretRef",
            )  # fmt: skip
    for index, credential in enumerate(spec.sandbox.egress.credentials):
        if refused is not None:
            break
        ref = credential.secret_ref
        refused = credential_refusal(
            apply.get_secret(namespace, ref.name), ref,
            f"spec.sandbox.egress.credentials[{index}].secretRef",
        )  # fmt: skip
    return secret, refused


def _ensure_egress_ca(namespace: str, agent: str, uid: str) -> None:
    """The Agent's egress CA, made once: the Secret (certificate and key, for its harness) and
    the ConfigMap its sandboxes trust (the certificate alone, read from that Secret)."""
    existing = apply.get_secret(namespace, egress_ca_name(agent))
    if existing is None:
        cert, key = new_authority(agent, namespace)
        apply.create_if_absent(build_ca_secret(namespace, agent, uid, cert, key))
        existing = apply.get_secret(namespace, egress_ca_name(agent))
    assert existing is not None
    cert = base64.b64decode(existing["data"]["tls.crt"]).decode()
    apply.ensure(build_ca_configmap(namespace, agent, uid, cert))


def _agent_readiness(
    namespace: str, name: str, spec: AgentSpec, settings: Settings
) -> tuple[bool, str, str]:
    _, refused = _refusal(namespace, spec, settings)
    if refused is not None:
        return False, refused.reason, refused.message
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
    status: kopf.Status, patch: kopf.Patch, memo: kopf.Memo, **_: Any,
) -> None:  # fmt: skip
    assert namespace is not None  # Agents are namespaced
    parsed = AgentSpec.model_validate(dict(spec))
    generation = meta.get("generation")
    settings = state_of(memo).settings
    secret, refused = _refusal(namespace, parsed, settings)
    if refused is not None:
        patch.status["conditions"] = _set(
            status, "Ready", False, refused.reason, refused.message, generation
        )
        events.warn(body, reason=refused.reason, message=refused.message)
        # A harness started before (the Secret's label since removed, the spec since changed)
        # holds the key: it goes too.
        apply.delete_harness(namespace, name)
        if refused.permanent:
            raise kopf.PermanentError(refused.message)
        raise kopf.TemporaryError(refused.message, delay=5)
    assert secret is not None  # refusal() refuses a missing Secret
    version = str(secret["metadata"]["resourceVersion"])
    target = AgentTarget(namespace, name, uid, dict(spec), version)
    if parsed.sandbox.egress.mode == EgressMode.HOSTS:
        _ensure_egress_ca(namespace, name, uid)
    for obj in build_harness_objects(target, settings.harness):
        apply.ensure(obj)
    patch.status["observedGeneration"] = generation
    events.info(body, reason="HarnessReconciled", message=f"{harness_name(name)} matches the Agent")


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
    size = memory_size(((body.get("data") or {}).get(MEMORY_KEY)) or "")
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
    tasks_to_retry: kopf.Index[tuple[str, str], tuple[str, bool]],
    policy_selectors: kopf.Index[str, tuple[str, dict[str, Any]]],
    **kwargs: Any,
) -> None:
    assert namespace is not None  # Agents are namespaced
    key = (namespace, name)
    governing = policies_for(policy_selectors, namespace, dict(meta.get("labels") or {}))
    if list(status.get("policies") or []) != governing:
        patch.status["policies"] = governing
    if key in tasks_to_retry:
        retry_stragglers(
            namespace, list(tasks_to_retry[key]), cache_of(kwargs), state_of(kwargs["memo"])
        )
    phases = list(tasks_by_agent[key]) if key in tasks_by_agent else []
    sizes = list(memory_sizes[key]) if key in memory_sizes else []
    counts = agent_counts(phases, sizes[0] if sizes else 0)
    for field, value in counts.items():
        if status.get(field) != value:
            patch.status[field] = value
    settings = state_of(kwargs["memo"]).settings
    ok, reason, message = _agent_readiness(
        namespace, name, AgentSpec.model_validate(dict(spec)), settings
    )
    current = list(status.get("conditions") or [])
    old = next((c for c in current if c.get("type") == "Ready"), None)
    if (
        old is not None
        and old.get("status") == ("True" if ok else "False")
        and old.get("reason") == reason
    ):
        return
    if reason in REFUSALS:  # newly refused (a label removed): the harness holding the key goes
        apply.delete_harness(namespace, name)
    patch.status["conditions"] = _set(status, "Ready", ok, reason, message, meta.get("generation"))


# ---------------------------------------------------------------------------------------------
# Tasks


def _write_unless_moved(meta: kopf.Meta, seen: Mapping[str, Any], status: Obj) -> None:
    """Merge ``status`` into the Task's only if what it overwrites is still as this handler saw
    it (``seen``).

    The harness writes the same status (phase, and conditions such as ``Queued``, in the same
    list: a merge patch replaces a list whole). A write computed from a stale view would undo
    the harness's (a Running Task set back to Pending, its Queued condition lost), so the write
    is preconditioned on the resourceVersion seen. When that moved on, the Task is read again:
    if only other fields changed (a harness asking for its sandbox), the same write is made at
    the new version; else the handler looks again at the Task as it now is (kopf's retry, with
    a progress write and a pause: 1,000 Tasks created at once ran at under half the rate)."""
    namespace, name, version = meta["namespace"], meta["name"], meta["resourceVersion"]
    for _ in range(3):
        if apply.patch_task_status(namespace, name, status, resource_version=version):
            return
        current = apply.get_task(namespace, name)
        if current is None:
            return  # deleted: nothing to write
        now = current.get("status") or {}
        if any(not _same(key, now.get(key), seen.get(key)) for key in {*status, "phase"}):
            break
        version = current["metadata"]["resourceVersion"]
    raise kopf.TemporaryError("the Task changed meanwhile: looking at it again", delay=0.2)


def _same(key: str, now: Any, seen: Any) -> bool:
    """Whether a status field is as it was seen, counting the CRD's defaults, which the API
    server fills in at a status's first write (``phase: Pending``, empty lists), as unset."""
    unset = "Pending" if key == "phase" else None
    return (now or unset) == (seen or unset)


def _cancel_untaken(body: kopf.Body, meta: kopf.Meta, status: kopf.Status) -> None:
    """End a cancelled Task that no session has started (a harness ends its own)."""
    if status.get("phase") not in UNTAKEN_PHASES:
        return
    # A harness taking it meanwhile is a conflict: looked at again, it is its harness's to end.
    _write_unless_moved(meta, status, cancelled_status(dict(status), meta.get("generation")))


@kopf.on.event(GROUP, VERSION, "tasks", id="task-ended-event")
def report_ended(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A Warning Event when a Task fails or is cancelled (a limit reached is a failure), once:
    people watching ``kubectl get events`` or an alerting pipeline see it without polling."""
    reported = state_of(memo).reported
    uid = str(body["metadata"].get("uid", ""))
    if event.get("type") == "DELETED":
        reported.discard(uid)
        return
    status = body.get("status") or {}
    phase = status.get("phase")
    if phase not in ("Failed", "Cancelled") or uid in reported:
        return
    ended: Obj = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), {}
    )
    reason = str(ended.get("reason") or phase)
    message = str(ended.get("message") or f"the Task ended {phase}")
    events.warn(body, reason=reason, message=f"{phase}: {message}", once=True)
    reported.add(uid)


@kopf.on.field(GROUP, VERSION, "tasks", field="spec.cancel", id="task-cancel", backoff=BACKOFF)
@counted
def cancel_task(body: kopf.Body, meta: kopf.Meta, status: kopf.Status, new: Any, **_: Any) -> None:
    if new and status.get("phase") not in FINAL_PHASES:
        _cancel_untaken(body, meta, status)


@kopf.on.resume(GROUP, VERSION, "tasks", id="task-accept", backoff=BACKOFF)
@kopf.on.create(GROUP, VERSION, "tasks", id="task-accept", backoff=BACKOFF)
@counted
def accept_task(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    **kwargs: Any,
) -> None:
    if status.get("phase") in FINAL_PHASES:
        return
    if spec.get("cancel"):
        _cancel_untaken(body, meta, status)
        return
    generation = meta.get("generation")
    namespace = meta.get("namespace") or ""
    agent = spec.get("assignee", {}).get("agent")
    team = spec.get("assignee", {}).get("team") or meta.get("labels", {}).get(TEAM_LABEL)

    def refuse(reason: str, message: str) -> NoReturn:
        _write_unless_moved(meta, status, {
            "conditions": _set(status, "Accepted", False, reason, message, generation),
            "phase": status.get("phase") or "Pending",
        })  # fmt: skip
        events.warn(body, reason=reason, message=message)
        raise kopf.TemporaryError(message, delay=10)  # it may yet be created

    if not agent:
        found = apply.get_team(namespace, team or "")
        if found is None:
            refuse("TeamNotFound", f'the Team "{team}" does not exist in namespace "{namespace}"')
        agent = found["spec"]["lead"]
    if cache_of(kwargs).agent_spec(namespace, agent) is None:
        refuse("AgentNotFound", f'the Agent "{agent}" does not exist in namespace "{namespace}"')
    changes: Obj = {}
    if team and status.get("team") != team:
        changes["team"] = team
    depth = meta.get("annotations", {}).get(DEPTH_ANNOTATION)
    if depth and int(status.get("depth") or 0) != int(depth):
        changes["depth"] = int(depth)
    if not status.get("agent"):
        changes["agent"] = agent
    parent = parent_of(dict(body))
    if parent and status.get("parent") != parent:
        changes["parent"] = parent
    if not status.get("phase"):
        changes["phase"] = "Pending"
    message = f'the Agent "{agent}" works this Task'
    accepted = any(c.get("type") == "Accepted" for c in status.get("conditions") or [])
    changes["conditions"] = _set(status, "Accepted", True, "AgentAssigned", message, generation)
    _write_unless_moved(meta, status, changes)
    if not accepted:
        events.info(body, reason="Accepted", message=message)
