"""A Task's sandbox, level-based: whatever the event (the Task's or its pod's), make the
sandbox match what the Task's status says. When the session asks for hands the sandbox is
built; once its pod is ready the session is told where it is; when the Task ends it goes.
A session waiting on delegated Tasks gives its pod back (the workspace stays).

Every decision reads the operator's cache (``cadre.operator.cache``), kept by the indexes
below: a Task costs the API server its writes, not a read before each of them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from cadre.api import GROUP, VERSION
from cadre.api.agent import AgentSpec
from cadre.api.names import COMPONENT_LABEL, TASK_LABEL, sandbox_name
from cadre.api.task import FINAL_PHASES
from cadre.api.types import Obj, SessionFields, session_of
from cadre.operator import apply, events, metrics
from cadre.operator.cache import Cache, Key, pod_view, session_changes, task_view
from cadre.operator.sandbox_builders import (
    SandboxTarget,
    build_sandbox_objects,
    build_sandbox_service_account,
)
from cadre.operator.settings import BACKOFF
from cadre.operator.state import OperatorState, state_of


# kopf passes each index to handlers under its function's name.
@kopf.index(GROUP, VERSION, "tasks")
def task_views(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Obj]:
    return {(namespace or "", name): task_view(body)}


@kopf.index("", "v1", "pods", labels={COMPONENT_LABEL: "sandbox"})
def sandbox_pods(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Key, Obj] | None:
    task = labels.get(TASK_LABEL)
    if not task or namespace is None:
        return None
    return {(namespace, task): pod_view(body)}


@kopf.index(GROUP, VERSION, "agents")
def agent_specs(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[Key, Obj]:
    return {(namespace or "", name): dict(spec)}


def cache_of(kwargs: dict[str, Any]) -> Cache:
    """The cache from a handler's keyword arguments (kopf's indexes, by name)."""
    return Cache(kwargs["task_views"], kwargs["sandbox_pods"], kwargs["agent_specs"])


def model_of(cache: Cache, namespace: str) -> Callable[[str], str]:
    def model(agent: str) -> str:
        spec = cache.agent_spec(namespace, agent)
        return str(spec.get("model", "")) if spec else ""

    return model


@kopf.on.event(GROUP, VERSION, "tasks", id="task-sandbox")
def sandbox_for_task(body: kopf.Body, type: str | None, memo: kopf.Memo, **kwargs: Any) -> None:
    cache, state = cache_of(kwargs), state_of(memo)
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    metrics.observe_task(dict(body), model_of(cache, namespace), type == "DELETED")
    if type == "DELETED":
        state.written.pop((namespace, name), None)
    else:
        reconcile_sandbox(task_view(body), cache, state)


@kopf.on.event("", "v1", "pods", labels={COMPONENT_LABEL: "sandbox"}, id="sandbox-pod")
def sandbox_pod_changed(body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    """A sandbox pod that changed (started, became ready, died): its Task's sandbox is
    reconciled again. A pod that died while its Task still works comes back, workspace kept;
    one whose Task ended is removed."""
    task = body["metadata"].get("labels", {}).get(TASK_LABEL)
    if not task:
        return
    cache, state = cache_of(kwargs), state_of(memo)
    state.created.pop((body["metadata"]["namespace"], task), None)  # the cache has its pod now
    found = cache.task(body["metadata"]["namespace"], task)
    if found is not None:
        reconcile_sandbox(found, cache, state)


def sandbox_out_of_step(status: Obj) -> bool:
    """The sandbox is not yet what the Task's status asks for: requested but not ready, or
    the Task ended and its sandbox is still recorded."""
    session = session_of(status)
    if status.get("phase") in FINAL_PHASES:
        return bool(session.get("sandboxPod"))
    return bool(session.get("sandboxRequested")) and not session.get("sandboxReady")


def _ref(body: Obj) -> kopf.Body:
    """A plain Task dict as kopf's event poster wants it (it reads kind, name, uid, namespace)."""
    return cast(kopf.Body, body)


CREATED_SECONDS = 30.0
"""After this long, a created sandbox whose pod never showed up is created again."""


def reconcile_sandbox(task: Obj, cache: Cache, state: OperatorState) -> None:
    meta, status = task["metadata"], task.get("status") or {}
    session = session_of(status)
    namespace, name = meta["namespace"], meta["name"]
    if meta.get("deletionTimestamp"):
        return
    pod = cache.pod(namespace, name)
    if status.get("phase") in FINAL_PHASES:
        _remove_sandbox(task, cache, pod, state)
        return
    if not session.get("sandboxRequested") or not session.get("sandboxTokenSHA256"):
        return
    if not session.get("sandboxReady"):
        metrics.sandbox_requested(f"{namespace}/{name}")
    if pod is not None and not pod["deleting"]:
        report_sandbox(task, pod, state)  # it exists: only say where
        return
    agent_name = status.get("agent") or task["spec"].get("assignee", {}).get("agent") or ""
    agent = cache.agent_spec(namespace, agent_name)
    if agent is None:
        return
    if time.monotonic() - state.created.get((namespace, name), -CREATED_SECONDS) < CREATED_SECONDS:
        return  # created a moment ago: its pod is on its way to the cache
    parsed = AgentSpec.model_validate(agent)
    digest = session.get("sandboxTokenSHA256") or ""  # checked above
    target = SandboxTarget(namespace, name, meta["uid"], agent_name, parsed.sandbox, digest)
    if namespace not in state.accounts:
        apply.ensure_exists(build_sandbox_service_account(namespace))  # shared by the namespace
        state.accounts.add(namespace)
    try:
        for obj in build_sandbox_objects(target, state.settings.sandbox):
            apply.ensure(obj)
    except ApiException as err:
        if err.status == 403:  # the pod was refused: its ServiceAccount may have been deleted
            state.accounts.discard(namespace)
        raise
    state.created[(namespace, name)] = time.monotonic()
    events.info(
        _ref(task), reason="SandboxCreated", message=f"{sandbox_name(name)} for the session's tools"
    )
    # Where it is comes with the pod's events, once it is ready.


def _remove_sandbox(task: Obj, cache: Cache, pod: Obj | None, state: OperatorState) -> None:
    """The Task ended: its sandbox goes. Later events of the ended Task cost no deletes: the
    pod goes first, in the same pass as the rest, so a pod already going means the pass ran
    (what a crash mid-pass leaves is owned by the Task and goes with it)."""
    meta, session = task["metadata"], session_of(task.get("status"))
    namespace, name = meta["namespace"], meta["name"]
    if pod is None and not session.get("sandboxPod") and (namespace, name) not in state.created:
        return
    state.created.pop((namespace, name), None)
    if pod is not None and pod["deleting"]:
        return
    agent = cache.agent_spec(namespace, (task.get("status") or {}).get("agent") or "")
    retain = (
        agent is not None
        and AgentSpec.model_validate(agent).sandbox.workspace.retention == "Retain"
    )
    apply.delete_sandbox(namespace, name, keep_workspace=retain)
    gone: SessionFields = {"sandboxReady": False, "sandboxAddress": None, "sandboxPod": None}
    _write_session(task, gone, state)
    kept = "kept" if retain else "deleted"
    events.info(_ref(task), reason="SandboxDeleted", message=f"the Task ended; workspace {kept}")


def report_sandbox(task: Obj, pod: Obj | None, state: OperatorState) -> None:
    """Tell the session where its sandbox is, once its pod is ready (and when it moves)."""
    namespace, name = task["metadata"]["namespace"], task["metadata"]["name"]
    ready = pod is not None and pod["ready"] and not pod["deleting"]
    port = state.settings.sandbox.port
    address = f"{pod['ip']}:{port}" if ready and pod is not None else None
    if ready:
        metrics.sandbox_ready(f"{namespace}/{name}")
    fields: SessionFields = {"sandboxReady": ready, "sandboxAddress": address}
    if ready or pod is None:
        # A pod that is only starting changes nothing the session acts on: no write for it.
        fields["sandboxPod"] = sandbox_name(name) if pod else None
    _write_session(task, fields, state)


def _write_session(task: Obj, fields: SessionFields, state: OperatorState) -> None:
    """Write session fields the Task does not already say (no needless writes)."""
    meta = task["metadata"]
    key = (meta["namespace"], meta["name"])
    changes, written = session_changes(task, fields), state.written.get(key)
    if changes is None or (written is not None and changes.items() <= written.items()):
        return
    if apply.patch_task_status(meta["namespace"], meta["name"], {"session": changes}):
        state.written[key] = {**state.written.get(key, {}), **changes}


def retry_sandbox(task: Obj, cache: Cache, state: OperatorState) -> None:
    """The straggler sweep's pass: touches nothing while the pod exists and is only starting;
    reports a ready pod never reported; otherwise reconciles as an event would."""
    meta, status = task["metadata"], task.get("status") or {}
    if status.get("phase") not in FINAL_PHASES:
        pod = cache.pod(meta["namespace"], meta["name"])
        if pod is not None and not pod["deleting"]:
            if pod["ready"]:
                report_sandbox(task, pod, state)
            return
    reconcile_sandbox(task, cache, state)


def _waiting(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") == "Waiting"


def register_release_timer(seconds: float) -> None:
    """Release the sandbox of a Task that has waited ``seconds`` on its children (the
    operator's setting): registered at start-up, since kopf takes a timer's interval when the
    timer is declared."""
    kopf.timer(
        GROUP, VERSION, "tasks", id="task-waiting-release", when=_waiting,
        interval=seconds, initial_delay=seconds, backoff=BACKOFF,
    )(release_waiting_sandbox)  # fmt: skip


def release_waiting_sandbox(
    body: kopf.Body, status: kopf.Status, meta: kopf.Meta, memo: kopf.Memo, **_: Any
) -> None:
    """Waiting holds no compute: the pod goes, the workspace stays; the session asks again
    when it next needs hands. Conditional on the Task not having moved since it was read, so
    a session that just woke up does not lose the sandbox it asked for."""
    session = session_of(status)
    if not session.get("sandboxRequested") and not session.get("sandboxPod"):
        return
    namespace, name = meta["namespace"], meta["name"]
    released: SessionFields = {
        "sandboxRequested": False, "sandboxReady": False, "sandboxAddress": None, "sandboxPod": None
    }  # fmt: skip
    if not apply.patch_task_status(
        namespace, name, {"session": released}, resource_version=meta["resourceVersion"]
    ):
        return
    state_of(memo).written[(namespace, name)] = released
    apply.delete_sandbox(namespace, name, keep_workspace=True)
    events.info(
        body,
        reason="SandboxReleased",
        message="the session waits on delegated Tasks; workspace kept",
    )
