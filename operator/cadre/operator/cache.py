"""The operator's cached view of Tasks, their sandbox pods and Agents: what an informer's cache
is to a Go controller. kopf keeps each view in an index, from the watch it runs anyway, so
reconciling a Task's sandbox reads nothing from the API server; writes still go to it.

kopf fills every index before any handler runs, so nothing is missed at start. A view may be
one event behind the server, which is safe because reconciliation is level-based: each write
the operator makes comes back as a watch event, and the handler runs again on fresh views. A
create that races a view still missing its object gets 409 AlreadyExists, which ``apply``
takes as done. One miss would be acted on wrongly: an Agent created together with its Task
may not be in the view yet, so an Agent missing from the view is read from the API server.

The views keep only the fields the operator acts on: with 1,000 Tasks the cache stays small
(a Task's result can hold 64 KiB of delivered files)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from cadre.api.types import Obj, SessionFields, session_of
from cadre.operator import apply

Key = tuple[str, str]
Index = Mapping[Key, Collection[Obj]]
"""What kopf passes a handler for an index: a key's values (one per object under it)."""

_TASK_META = ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp")
_TASK_STATUS = ("phase", "agent", "session")


def task_view(body: Mapping[str, Any]) -> Obj:
    """A Task as sandbox reconciliation reads it (and as kopf's event poster names it)."""
    meta, status = body["metadata"], body.get("status") or {}
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {k: meta[k] for k in _TASK_META if k in meta},
        "spec": {"assignee": dict((body.get("spec") or {}).get("assignee") or {})},
        "status": {k: status[k] for k in _TASK_STATUS if k in status},
    }


def pod_view(body: Mapping[str, Any]) -> Obj:
    """A sandbox pod as its Task's session sees it: going away, ready, and where."""
    status = body.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return {
        "name": body["metadata"]["name"],
        "deleting": bool(body["metadata"].get("deletionTimestamp")),
        "ready": ready,
        "ip": status.get("podIP"),
    }


def _one(index: Index, key: Key) -> Obj | None:
    """The value under ``key`` (at most one object has it: keys are namespace and name)."""
    if key not in index:
        return None
    return next(iter(index[key]), None)


@dataclass(frozen=True)
class Cache:
    tasks: Index
    """(namespace, name) -> ``task_view``."""
    pods: Index
    """(namespace, Task name) -> ``pod_view`` of its sandbox pod."""
    agents: Index
    """(namespace, name) -> the Agent's spec."""

    def task(self, namespace: str, name: str) -> Obj | None:
        return _one(self.tasks, (namespace, name))

    def pod(self, namespace: str, task: str) -> Obj | None:
        return _one(self.pods, (namespace, task))

    def agent_spec(self, namespace: str, name: str) -> Obj | None:
        if not name:
            return None
        found = _one(self.agents, (namespace, name))
        if found is not None:
            return found
        live = apply.get_agent(namespace, name)  # created a moment ago, or not at all
        return None if live is None else dict(live.get("spec") or {})


def session_changes(current: Obj | None, fields: SessionFields) -> SessionFields | None:
    """The session fields to write, or None when the Task already says all of them (an
    absent field is the same as false or null)."""
    session: Mapping[str, Any] = session_of((current or {}).get("status"))
    if all((session.get(k) or None) == (v or None) for k, v in fields.items()):
        return None
    return fields
