"""MCP tools end to end in the local cluster (operator, harness pod, sandbox pod, a real MCP
server over HTTPS, the scripted model): a credential Secret its owner did not label as a tool
credential gets the Agent no harness, naming the field; labelled, the harness pod (and only it)
gets the token in its environment, a Policy allows the MCP tool, the call reaches the server
with the token, and the sandbox, asked to print every environment it can read, shows none."""

from __future__ import annotations

import asyncio
from typing import Any

from cadre.api.names import TOOL_CREDENTIAL_LABEL

from tests.harness.conftest import ModelFactory, until
from tests.harness.mcp_server import McpServerProcess
from tests.localcluster.conftest import Served, for_pods
from tests.operator.conftest import CADRE, NS, create_agent, create_task, ended

CREATE = "mcp__tickets__create_ticket"
STEPS = [
    {"text": "Filing it.", "tool_uses": [
        {"name": CREATE, "input": {"title": "Disk full on build-3"}},
        {"name": "bash", "input": {
            "command": "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; id"}},
    ]},
    {"choices": [
        {"when_last_result_contains": "TICKET-1", "text": "Filed TICKET-1."},
        {"text": "Could not file it."},
    ]},
]  # fmt: skip


def _ready(http: Any) -> dict[str, Any] | None:
    status = http("GET", f"{CADRE}/agents/engineer").json().get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)


def _env_of(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for c in pod["spec"]["containers"] for e in c.get("env") or []]


async def test_an_mcp_tool_runs_brain_side_with_a_credential_the_sandbox_never_sees(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory,
    mcp_server: McpServerProcess,
) -> None:  # fmt: skip
    http = cluster.http
    url, model = await scripted({"agents": {"engineer": STEPS}})
    secret = {"metadata": {"name": "tickets"}, "stringData": {"token": mcp_server.token}}
    assert http("POST", f"/api/v1/namespaces/{NS}/secrets", secret).status_code == 201
    policy = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Policy", "metadata": {"name": "ops"},
              "spec": {"toolRules": [{"tools": [CREATE], "decision": "Allow"}]}}  # fmt: skip
    assert http("POST", f"{CADRE}/policies", policy).ok
    create_agent(http, url, mcpServers=[{
        "name": "tickets", "url": for_pods(mcp_server.url), "tools": ["create_ticket"],
        "caBundle": mcp_server.ca_bundle,
        "credential": {"secretRef": {"name": "tickets", "key": "token"}},
    }])  # fmt: skip
    refused = await until(lambda: (c := _ready(http)) and c["status"] == "False"
                          and c["reason"] == "SecretNotToolCredential" and c)  # fmt: skip
    assert refused["message"].startswith("spec.mcpServers[0].credential.secretRef: ")
    labelled = {"metadata": {"labels": {TOOL_CREDENTIAL_LABEL: "true"}}}
    assert http("PATCH", f"/api/v1/namespaces/{NS}/secrets/tickets", labelled,
                "application/merge-patch+json").ok  # fmt: skip

    create_task(http, "file-it", "File a ticket about the full disk.")
    done = await until(lambda: ended(http, "file-it"), within=120)
    assert (done["status"]["phase"], done["status"]["result"]["summary"]) == (
        "Succeeded", "Filed TICKET-1.")  # fmt: skip
    assert [c["title"] for c in mcp_server.calls() if c.get("tool") == "create_ticket"] == [
        "Disk full on build-3"]  # fmt: skip

    pods = http("GET", f"/api/v1/namespaces/{NS}/pods").json()["items"]
    harness = next(p for p in pods if p["metadata"]["name"].startswith("harness-engineer"))
    assert any(e["name"] == "CADRE_MCP_CREDENTIAL_TICKETS" for e in _env_of(harness))
    sandboxes = [p for p in pods if p["metadata"]["labels"].get("cadre.dev/component") == "sandbox"]
    for pod in sandboxes:
        assert not any("MCP" in e["name"] for e in _env_of(pod))
    # Everything the sandbox could print of every environment it can read reached the model:
    # the token is in none of it.
    shown = str(model.requests)
    assert "PATH=" in shown
    assert mcp_server.token not in shown
