"""The operator's writes and reads, each safe to repeat: create, and on 409 bring the live
object to what the builder says (StatefulSet spec, Role rules); 404 on delete means done."""

from __future__ import annotations

import functools
import json
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from cadre.api import GROUP, VERSION, events
from cadre.api.names import (
    PARENT_LABEL,
    REVIEW_OF_LABEL,
    harness_name,
    sandbox_name,
    sandbox_token_secret_name,
    sandbox_workspace_name,
)
from cadre.api.types import Obj

# What an existing object's owner may change; everything else stays as first created.
_UPDATABLE = {
    "StatefulSet": ("spec",),
    "Role": ("rules",),
    "RoleBinding": ("subjects",),
    "NetworkPolicy": ("spec",),
}


@functools.cache
def client() -> kubernetes.client.ApiClient:
    return kubernetes.client.ApiClient()


@functools.cache
def dynamic() -> DynamicClient:
    return DynamicClient(client())  # type: ignore[no-untyped-call]


def _body(response: Any) -> bytes:
    """The body of an answer asked for undecoded, its connection handed back to the pool.
    urllib3 keeps the connection of an answer that was not preloaded out of the pool until it
    is released: without this, every such call opened a new TLS connection (a handshake on
    both sides, most of the operator's CPU under load)."""
    try:
        return bytes(response.data)
    finally:
        response.release_conn()


def _raw(call: Any, *args: Any) -> bytes:
    """``call`` with the answer's body undecoded (the typed client models cost more CPU to
    build, and to turn back into dicts, than the rest of a reconcile pass)."""
    return _body(call(*args, _preload_content=False))


def ensure_exists(obj: Obj) -> None:
    """Create ``obj`` unless it exists (read first: shared objects are looked at far more often
    than they are missing, and a read costs the API server less than a refused create)."""
    resource = dynamic().resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    try:
        _body(
            resource.get(
                name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"),
                serialize=False,
            )
        )  # fmt: skip
    except ApiException as err:
        if err.status != 404:
            raise
        ensure(obj)


def create_if_absent(obj: Obj) -> None:
    """Create ``obj``; one that exists already is left exactly as it is (a CA made once)."""
    resource = dynamic().resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    try:
        _body(resource.create(body=obj, namespace=obj["metadata"].get("namespace"),
                              serialize=False))  # fmt: skip
    except ApiException as err:
        if err.status != 409:
            raise


def ensure(obj: Obj) -> None:
    resource = dynamic().resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    namespace = obj["metadata"].get("namespace")
    try:
        _body(resource.create(body=obj, namespace=namespace, serialize=False))
        return
    except ApiException as err:
        if err.status != 409:
            raise
    fields = _UPDATABLE.get(obj["kind"])
    if fields:
        patch = {field: obj[field] for field in fields}
        if obj["kind"] == "StatefulSet":
            # Immutable parts of a StatefulSet's spec stay; what may change is sent.
            spec = obj["spec"]
            patch = {"spec": {"replicas": spec["replicas"], "template": spec["template"]}}
        _body(
            resource.patch(
                body=patch, name=obj["metadata"]["name"], namespace=namespace,
                content_type="application/merge-patch+json", serialize=False,
            )
        )  # fmt: skip


def _read(call: Any, *args: Any) -> Obj | None:
    """The object as plain JSON (None when it does not exist)."""
    try:
        result: Obj = json.loads(_raw(call, *args))
    except ApiException as err:
        if err.status == 404:
            return None
        raise
    return result


def create_or_count_event(event: Obj, count: bool) -> None:
    """Create ``event``, or count it once more (``cadre.api.events.create_or_count``)."""
    core = kubernetes.client.CoreV1Api(client())
    namespace = event["metadata"]["namespace"]
    events.create_or_count(
        event,
        lambda body: _unless_conflict(core.create_namespaced_event, namespace, body),
        lambda name: _read(core.read_namespaced_event, name, namespace),
        lambda name, body: _unless_conflict(core.patch_namespaced_event, name, namespace, body),
        count,
    )


def _unless_conflict(call: Any, *args: Any) -> bool:
    """``call`` made; False if the API server answered 409 Conflict (or AlreadyExists)."""
    try:
        _raw(call, *args)
    except ApiException as err:
        if err.status != 409:
            raise
        return False
    return True


def get_secret(namespace: str, name: str) -> Obj | None:
    return _read(kubernetes.client.CoreV1Api(client()).read_namespaced_secret, name, namespace)


def delete_harness(namespace: str, agent: str) -> None:
    """The Agent's harness StatefulSet; its pod goes with it (garbage collection), its volume
    stays (the session logs, for a harness allowed again later)."""
    apps = kubernetes.client.AppsV1Api(client())
    _delete(apps.delete_namespaced_stateful_set, harness_name(agent), namespace)


def statefulset_ready(namespace: str, name: str) -> bool:
    sts = _read(kubernetes.client.AppsV1Api(client()).read_namespaced_stateful_set, name, namespace)
    return sts is not None and int((sts.get("status") or {}).get("readyReplicas") or 0) >= 1


def get_agent(namespace: str, name: str) -> Obj | None:
    if not name:
        return None
    api = kubernetes.client.CustomObjectsApi(client())
    return _read(api.get_namespaced_custom_object, GROUP, VERSION, namespace, "agents", name)


def get_task(namespace: str, name: str) -> Obj | None:
    api = kubernetes.client.CustomObjectsApi(client())
    return _read(api.get_namespaced_custom_object, GROUP, VERSION, namespace, "tasks", name)


def get_pod(namespace: str, name: str) -> Obj | None:
    return _read(kubernetes.client.CoreV1Api(client()).read_namespaced_pod, name, namespace)


def _delete(call: Any, *args: Any) -> None:
    try:
        _raw(call, *args)  # the answer is not used: not decoded either
    except ApiException as err:
        if err.status != 404:
            raise


def delete_sandbox(namespace: str, task: str, keep_workspace: bool) -> None:
    core = kubernetes.client.CoreV1Api(client())
    net = kubernetes.client.NetworkingV1Api(client())
    _delete(core.delete_namespaced_pod, sandbox_name(task), namespace)
    _delete(core.delete_namespaced_service, sandbox_name(task), namespace)
    _delete(net.delete_namespaced_network_policy, sandbox_name(task), namespace)
    _delete(core.delete_namespaced_secret, sandbox_token_secret_name(task), namespace)
    if not keep_workspace:
        _delete(
            core.delete_namespaced_persistent_volume_claim, sandbox_workspace_name(task), namespace
        )


def get_team(namespace: str, name: str) -> Obj | None:
    if not name:
        return None
    api = kubernetes.client.CustomObjectsApi(client())
    return _read(api.get_namespaced_custom_object, GROUP, VERSION, namespace, "teams", name)


def list_children(namespace: str, parent: str) -> list[Obj]:
    """The Tasks a Task delegated (by the label the operator sets on them)."""
    return _list_tasks(namespace, f"{PARENT_LABEL}={parent}")


def list_reviews(namespace: str, task: str) -> list[Obj]:
    """The review Tasks of a delegated Task's deliveries (by their label)."""
    return _list_tasks(namespace, f"{REVIEW_OF_LABEL}={task}")


def _list_tasks(namespace: str, selector: str) -> list[Obj]:
    api = kubernetes.client.CustomObjectsApi(client())
    found: Obj = api.list_namespaced_custom_object(  # type: ignore[assignment]
        GROUP, VERSION, namespace, "tasks", label_selector=selector
    )
    return list(found["items"])


def patch_task_status(
    namespace: str, task: str, status: Obj, resource_version: str | None = None
) -> bool:
    """Merge-patch a Task's status; with ``resource_version``, only if the Task is still at it
    (False when it moved on: the caller decided on a stale view)."""
    api = kubernetes.client.CustomObjectsApi(client())
    body: Obj = {"status": status}
    if resource_version is not None:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        _raw(
            api.patch_namespaced_custom_object_status,
            GROUP,
            VERSION,
            namespace,
            "tasks",
            task,
            body,
        )
    except ApiException as err:
        if err.status in (404, 409):
            return False
        raise
    return True


def cancel_task(namespace: str, task: str) -> None:
    api = kubernetes.client.CustomObjectsApi(client())
    _delete(
        api.patch_namespaced_custom_object,
        GROUP, VERSION, namespace, "tasks", task, {"spec": {"cancel": True}},
    )  # fmt: skip


def list_agents(namespace: str) -> dict[str, Obj]:
    api = kubernetes.client.CustomObjectsApi(client())
    found: Obj = api.list_namespaced_custom_object(  # type: ignore[assignment]
        GROUP, VERSION, namespace, "agents"
    )
    return {a["metadata"]["name"]: a for a in found["items"]}
