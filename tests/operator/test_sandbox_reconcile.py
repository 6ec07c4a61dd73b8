"""One Task's sandbox pass (``reconcile_sandbox``) against the local API server, driven from
the test process with a cache built by hand (kopf fills it in the operator): the objects are
created once, not again while the pod is on its way to the cache, and a namespace whose
shared sandbox ServiceAccount was deleted gets it back on the next pass after the API server
refuses the pod. The operator's Events (``events.info``) are replaced by a recorder here, so the
creates counted are the sandbox's objects only."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import kubernetes
import pytest
from cadre.api.types import Obj
from cadre.operator import events
from cadre.operator.cache import Cache, Key, task_view
from cadre.operator.sandbox_handlers import reconcile_sandbox
from cadre.operator.settings import from_env
from cadre.operator.state import OperatorState

from tests.localcluster.conftest import Http, Served, agent_manifest
from tests.operator.conftest import CADRE, NS

SPEC = agent_manifest("engineer")["spec"]


class _Index(dict[Key, Collection[Obj]]):
    """An index as kopf hands it to a handler."""


def _requested(http: Http, name: str) -> Obj:
    """A Task whose session asked for its sandbox, as stored (its uid owns the sandbox)."""
    task = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"assignee": {"agent": "engineer"}, "prompt": "p"}}  # fmt: skip
    assert http("POST", f"{CADRE}/tasks", task).status_code == 201
    session = {"sandboxRequested": True, "sandboxTokenSHA256": "0" * 64}
    status = {"status": {"agent": "engineer", "phase": "Running", "session": session}}
    response = http("PATCH", f"{CADRE}/tasks/{name}/status", status, "application/merge-patch+json")
    assert response.status_code == 200, response.text
    return task_view(response.json())


def _creates(server: Any) -> float:
    counts = server.request_counts()
    return sum(
        v
        for (verb, *_, client), v in counts.items()
        if verb == "create" and client != "python-requests"
    )


def test_a_sandbox_is_created_once_and_its_service_account_comes_back(
    cluster: Served,
    apply_client: kubernetes.client.ApiClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handle, http = cluster.handle, cluster.http
    server = handle.server
    assert server is not None
    state = OperatorState(from_env({}))
    posted: list[str] = []
    monkeypatch.setattr(events, "info", lambda body, reason, message: posted.append(reason))
    cache = Cache(_Index(), _Index(), _Index({(NS, "engineer"): [SPEC]}))

    first = _requested(http, "one")
    reconcile_sandbox(first, cache, state)
    made = _creates(server)
    assert made == 6  # the ServiceAccount, then Secret, PVC, NetworkPolicy, Pod, Service
    assert http("GET", f"/api/v1/namespaces/{NS}/pods/sbx-one").status_code == 200
    reconcile_sandbox(first, cache, state)  # a Task event before the pod reached the cache
    assert _creates(server) == made
    assert posted == ["SandboxCreated"]

    gone = http("DELETE", f"/api/v1/namespaces/{NS}/serviceaccounts/cadre-sandbox")
    assert gone.status_code == 200, gone.text
    second = _requested(http, "two")
    with pytest.raises(kubernetes.client.ApiException) as refused:
        reconcile_sandbox(second, cache, state)
    assert refused.value.status == 403  # no pod without its ServiceAccount
    reconcile_sandbox(second, cache, state)  # the straggler sweep's next pass
    assert http("GET", f"/api/v1/namespaces/{NS}/serviceaccounts/cadre-sandbox").status_code == 200
    assert http("GET", f"/api/v1/namespaces/{NS}/pods/sbx-two").status_code == 200
    assert posted == ["SandboxCreated", "SandboxCreated"]
