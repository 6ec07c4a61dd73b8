"""The operator's cached views (``cadre.operator.cache``): what they keep of a Task and a pod,
the session fields written only when the cached Task does not say them yet, and the one miss
that is asked of the API server (an Agent created together with its Task)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import kubernetes
from cadre.api.types import Obj
from cadre.operator.cache import Cache, Key, pod_view, session_changes, task_view

from tests.localcluster.conftest import Served, agent_manifest
from tests.operator.conftest import CADRE, NS


def _task(**status: Any) -> Obj:
    return {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "t", "namespace": NS, "uid": "u1", "resourceVersion": "9",
                     "labels": {"a": "b"}, "managedFields": [{"manager": "x"}]},
        "spec": {"assignee": {"agent": "engineer"}, "prompt": "p" * 10_000},
        "status": {"phase": "Running", "agent": "engineer", "result": {"files": ["big"]},
                   "session": {"sandboxRequested": True}, **status},
    }  # fmt: skip


def test_a_task_view_keeps_what_sandbox_reconciliation_reads_and_no_more() -> None:
    view = task_view(_task())
    assert view == {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "t", "namespace": NS, "uid": "u1", "resourceVersion": "9"},
        "spec": {"assignee": {"agent": "engineer"}},
        "status": {"phase": "Running", "agent": "engineer", "session": {"sandboxRequested": True}},
    }
    deleting = _task()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert task_view(deleting)["metadata"]["deletionTimestamp"] == "2026-01-01T00:00:00Z"
    bare = {"metadata": {"name": "n", "namespace": NS, "uid": "u"}, "spec": {}}
    assert task_view(bare)["status"] == {}
    assert task_view(bare)["spec"] == {"assignee": {}}


def test_a_pod_view_says_going_ready_and_where() -> None:
    conditions = [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]
    pod: Obj = {
        "metadata": {"name": "sbx-t"},
        "status": {"podIP": "10.0.0.7", "conditions": conditions},
    }
    assert pod_view(pod) == {"name": "sbx-t", "deleting": False, "ready": True, "ip": "10.0.0.7"}
    pod["status"]["conditions"][1]["status"] = "False"
    assert pod_view(pod)["ready"] is False
    starting: Obj = {"metadata": {"name": "p", "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    assert pod_view(starting) == {"name": "p", "deleting": True, "ready": False, "ip": None}


def test_session_fields_are_written_only_where_the_task_differs() -> None:
    task = task_view(_task(session={"sandboxRequested": True, "sandboxReady": True,
                                    "sandboxAddress": "10.0.0.7:8080"}))  # fmt: skip
    same = {"sandboxReady": True, "sandboxAddress": "10.0.0.7:8080"}
    assert session_changes(task, same) is None
    # Absent, False and None are all "not set".
    assert session_changes(task, {"sandboxPod": None}) is None
    moved = {"sandboxReady": True, "sandboxAddress": "10.0.0.8:8080"}
    assert session_changes(task, moved) == moved
    assert session_changes(None, same) == same


class _Index(dict[Key, Collection[Obj]]):
    """An index as kopf hands it to a handler: a mapping of keys to their values."""


def test_lookups_hit_the_views() -> None:
    task, pod = task_view(_task()), {"name": "sbx-t", "deleting": False, "ready": True, "ip": "x"}
    cache = Cache(
        _Index({(NS, "t"): [task]}), _Index({(NS, "t"): [pod]}),
        _Index({(NS, "engineer"): [{"model": "m"}]}),
    )  # fmt: skip
    assert cache.task(NS, "t") == task
    assert cache.task(NS, "other") is None
    assert cache.pod(NS, "t") == pod
    assert cache.pod("elsewhere", "t") is None
    assert cache.agent_spec(NS, "engineer") == {"model": "m"}
    assert cache.agent_spec(NS, "") is None  # no name: nothing to ask


def test_an_agent_missing_from_the_view_is_read_from_the_api_server(
    cluster: Served, apply_client: kubernetes.client.ApiClient
) -> None:
    http = cluster.http
    empty = Cache(_Index(), _Index(), _Index())
    assert empty.agent_spec(NS, "engineer") is None  # in neither
    response = http("POST", f"{CADRE}/agents", agent_manifest("engineer"))
    assert response.status_code == 201, response.text
    found = empty.agent_spec(NS, "engineer")
    assert found is not None
    assert found["model"] == "claude-sonnet-4-6"
