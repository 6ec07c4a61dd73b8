"""The sandbox's objects, exactly as the operator's builders make them, run in the local
cluster: the pod starts from the sandbox image, listens on its own address, answers tool calls
with its session token only, and goes with its Task."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from typing import Any

from cadre.api.agent import Sandbox
from cadre.operator.sandbox_builders import (
    SandboxDefaults,
    SandboxTarget,
    build_sandbox_objects,
    build_sandbox_service_account,
)

from tests.localcluster.conftest import Http, create_all, task_manifest
from tests.localcluster.node.conftest import eventually

TOKEN = "session-token-for-test"
DEFAULTS = SandboxDefaults(image="ghcr.io/cadre-dev/sandbox:0.1.0")


def _call(address: str, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://{address}:8080/v1/tool-calls",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_built_sandbox_serves_tool_calls_and_goes_with_its_task(
    http: Http, namespace: str
) -> None:
    task = http(
        "POST", f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks", task_manifest("fix")
    ).json()
    target = SandboxTarget(
        namespace=namespace,
        task="fix",
        task_uid=task["metadata"]["uid"],
        agent="engineer",
        spec=Sandbox(),
        token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
    )
    create_all(
        http,
        namespace,
        [build_sandbox_service_account(namespace), *build_sandbox_objects(target, DEFAULTS)],
    )
    pod_path = f"/api/v1/namespaces/{namespace}/pods/sbx-fix"

    def ready_pod() -> dict[str, Any] | None:
        pod: dict[str, Any] = http("GET", pod_path).json()
        conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
        return pod if conditions.get("Ready") == "True" else None

    pod = eventually(ready_pod, timeout=30)
    assert not any("serviceAccountToken" in json.dumps(v) for v in pod["spec"].get("volumes", []))
    address = pod["status"]["podIP"]
    code, result = _call(
        address,
        TOKEN,
        {
            "tool_use_id": "toolu_1",
            "name": "bash",
            "input": {"command": "echo hello > greeting && cat greeting && id -u"},
        },
    )
    assert code == 200, result
    assert result["details"]["exit_code"] == 0
    lines = result["content"].split("--- stdout ---\n")[1].split("\n")
    assert lines[0] == "hello"
    assert int(lines[1]) != 0  # never root
    assert (
        _call(
            address,
            "wrong-token",
            {"tool_use_id": "toolu_2", "name": "bash", "input": {"command": "true"}},
        )[0]
        == 401
    )
    http("DELETE", f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks/fix")
    eventually(lambda: http("GET", pod_path).status_code == 404, timeout=30)
    eventually(
        lambda: (
            http("GET", f"/api/v1/namespaces/{namespace}/secrets/sbx-fix-token").status_code == 404
        )
    )
