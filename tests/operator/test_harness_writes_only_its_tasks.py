"""A harness may write only its own Agent's Tasks: RBAC cannot scope by field, so the chart
ships a ValidatingAdmissionPolicy, and the local cluster enforces it (the ``cluster`` fixture
installs the chart's policy, rendered by the real Helm engine). Before, a harness's token made
``kubectl patch task <another agent's task> --subresource=status`` succeed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cadre.operator.harness_builders import (
    AgentTarget,
    build_harness_role,
    build_harness_role_binding,
    build_harness_service_account,
)

from tests.localcluster.conftest import Http, Served
from tests.operator.conftest import CADRE, NS

MERGE = "application/merge-patch+json"


def _harness_token(http: Http, agent: str) -> str:
    """What the operator gives a harness: its account, Role and binding; then a token."""
    spec = {"role": "r", "model": "m", "apiKeySecretRef": {"name": "k"}}
    body = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Agent", "metadata": {"name": agent},
            "spec": spec}  # fmt: skip
    created = http("POST", f"{CADRE}/agents", body).json()  # its harness objects' owner
    target = AgentTarget(NS, agent, created["metadata"]["uid"], spec)
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    for obj, where in (
        (build_harness_service_account(target), f"/api/v1/namespaces/{NS}/serviceaccounts"),
        (build_harness_role(target), f"{rbac}/namespaces/{NS}/roles"),
        (build_harness_role_binding(target), f"{rbac}/namespaces/{NS}/rolebindings"),
    ):
        response = http("POST", where, obj)
        assert response.status_code == 201, response.text
    response = http(
        "POST", f"/api/v1/namespaces/{NS}/serviceaccounts/harness-{agent}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600}},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    token: str = response.json()["status"]["token"]
    return token


def _task(http: Http, name: str, agent: str, **spec: Any) -> None:
    body = {
        "apiVersion": "cadre.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
        "spec": {"assignee": {"agent": agent}, "prompt": "p", **spec},
    }  # fmt: skip
    assert http("POST", f"{CADRE}/tasks", body).status_code == 201


def _patch_status(http: Http, task: str, status: dict[str, Any], token: str) -> Any:
    return http("PATCH", f"{CADRE}/tasks/{task}/status", {"status": status}, MERGE, token=token)


@pytest.fixture
def tasks(cluster: Served) -> str:
    """engineer's Task ``mine``; other's ``theirs``; ``asked``, other's work for engineer;
    ``screened``, other's work that engineer reviews for its Team. engineer's token."""
    http = cluster.http
    token = _harness_token(http, "engineer")
    _harness_token(http, "other")
    _task(http, "mine", "engineer")
    _task(http, "theirs", "other")
    _task(http, "asked", "other", parentRef={"name": "mine", "agent": "engineer"})
    _task(http, "screened", "other", parentRef={"name": "p", "agent": "lead"},
          review={"reviewer": "engineer"})  # fmt: skip
    for delivered in ("asked", "screened"):  # as the operator and other's harness left them
        status = {"phase": "InReview", "agent": "other", "review": {"deliveries": 1}}
        assert _patch_status(http, delivered, status, "default").status_code == 200
    return token


def test_a_harness_writes_its_own_agents_tasks(cluster: Served, tasks: str) -> None:
    written = _patch_status(cluster.http, "mine", {"phase": "Running", "agent": "engineer"}, tasks)
    assert written.status_code == 200, written.text


def test_a_harness_cannot_write_another_agents_task(cluster: Served, tasks: str) -> None:
    forged = {"phase": "Succeeded", "result": {"summary": "FORGED"}}
    refused = _patch_status(cluster.http, "theirs", forged, tasks)
    assert refused.status_code == 403, refused.text
    assert refused.json()["reason"] == "Forbidden"
    message = refused.json()["message"]
    assert message.startswith('tasks.cadre.dev "theirs" is forbidden: ValidatingAdmissionPolicy')
    assert (
        f"system:serviceaccount:{NS}:harness-engineer may not write the status of Task theirs"
        in message
    )
    assert "(assigned to other)" in message
    stored = cluster.http("GET", f"{CADRE}/tasks/theirs").json()
    assert (stored.get("status") or {}).get("phase") != "Succeeded"  # nothing was written


def test_the_requester_and_the_reviewer_write_only_the_review(cluster: Served, tasks: str) -> None:
    verdict = {"review": {"decision": "Accepted", "reviewer": "engineer"}}
    assert _patch_status(cluster.http, "asked", verdict, tasks).status_code == 200
    screened = {"review": {"screened": 1, "passed": 1}}
    assert _patch_status(cluster.http, "screened", screened, tasks).status_code == 200
    for task in ("asked", "screened"):
        more = {"review": {"round": 1}, "phase": "Succeeded"}
        assert _patch_status(cluster.http, task, more, tasks).status_code == 403


def test_a_harness_cannot_reassign_its_task(cluster: Served, tasks: str) -> None:
    refused = _patch_status(cluster.http, "mine", {"agent": "other"}, tasks)
    assert refused.status_code == 403
    assert "may not reassign a Task" in refused.json()["message"]


def test_kubectl_with_a_harness_token_is_refused_too(
    cluster: Served, tasks: str, tmp_path: Path
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed on this machine")
    result = subprocess.run(
        [kubectl, f"--kubeconfig={cluster.kubeconfig}", f"--cache-dir={tmp_path}",
         f"--token={tasks}", "-n", NS, "patch", "task", "theirs", "--subresource=status",
         "--type=merge", "-p", json.dumps({"status": {"phase": "Succeeded"}})],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "denied request" in result.stderr
    assert "harness-engineer may not write the status of Task theirs" in result.stderr
