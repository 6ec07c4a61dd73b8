"""Tool permission policies end to end in the local cluster (operator, harness pod, sandbox
pod, scripted model): a Policy selects the Agent by label (the Agent's status names it, the
Policy's status names the Agent); a bash call it asks about waits, shown in the Task's status
and ``kubectl get tasks``, holding no sandbox, until ``cadre approve --call``; a rejected call
(answered with a plain merge patch, as GitOps tools would) reaches the model as an error; a
Policy selecting no Agent says so."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.cli.test_commands import cadre
from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Served
from tests.operator.conftest import NS, create_agent, create_task, ended

CADRE = f"/apis/cadre.dev/v1alpha1/namespaces/{NS}"
STEPS = [
    {"choices": [
        {"when_prompt_contains": "approve", "text": "Writing.", "tool_uses": [
            {"name": "bash", "input": {"command": "echo yes > approved.txt && cat approved.txt"}}]},
        {"text": "Writing.", "tool_uses": [
            {"name": "bash", "input": {"command": "echo no > rejected.txt"}}]},
    ]},
    {"choices": [
        {"when_last_result_contains": "yes", "text": "Done: approved."},
        {"when_last_result_contains": "rejected by", "text": "Stopped: rejected."},
        {"text": "Unexpected."},
    ]},
]  # fmt: skip


def _policy(name: str, selector: dict[str, Any]) -> dict[str, Any]:
    rule = {"name": "shell-needs-a-human", "tools": ["bash"], "decision": "Ask",
            "message": "a person checks commands"}  # fmt: skip
    return {"apiVersion": "cadre.dev/v1alpha1", "kind": "Policy", "metadata": {"name": name},
            "spec": {"agentSelector": {"matchLabels": selector}, "toolRules": [rule]}}  # fmt: skip


async def test_ask_calls_wait_for_a_human_answer_given_with_cadre_or_a_patch(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory
) -> None:
    http = cluster.http
    url, _ = await scripted({"agents": {"engineer": STEPS}})
    assert http("POST", f"{CADRE}/policies", _policy("shell", {"team": "platform"})).ok
    assert http("POST", f"{CADRE}/policies", _policy("nobody", {"team": "none"})).ok
    create_agent(http, url)
    http("PATCH", f"{CADRE}/agents/engineer", {"metadata": {"labels": {"team": "platform"}}},
         content_type="application/merge-patch+json")  # fmt: skip

    def governs() -> bool:
        agent = http("GET", f"{CADRE}/agents/engineer").json()
        policy = http("GET", f"{CADRE}/policies/shell").json()
        return (agent.get("status") or {}).get("policies") == ["shell"] and (
            (policy.get("status") or {}).get("selectedAgents") == ["engineer"])  # fmt: skip

    await until(governs)
    nobody = await until(lambda: http("GET", f"{CADRE}/policies/nobody").json().get("status"))
    selecting = next(c for c in nobody["conditions"] if c["type"] == "Selecting")
    assert (selecting["status"], selecting["reason"]) == ("False", "NoAgentsSelected")

    create_task(http, "yes", "Please approve this.")
    create_task(http, "no", "Please do it.")

    def waiting(name: str) -> dict[str, Any] | None:
        status = http("GET", f"{CADRE}/tasks/{name}").json().get("status") or {}
        return status if status.get("pendingToolCalls") else None

    status = await until(lambda: waiting("yes"))
    assert status["phase"] == "Waiting"
    assert status["waitingFor"] == "approval of a bash call"
    ((call, pending),) = status["pendingToolCalls"].items()
    assert (pending["policy"], pending["rule"]) == ("shell", "shell-needs-a-human")
    assert "approved.txt" in pending["input"]
    listed = await asyncio.to_thread(cadre, cluster.kubeconfig, "approve", "yes", "--call", call,
                                     "--reason", "fine")  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert f"task/yes call {call} approved" in listed.stdout
    done = await until(lambda: ended(http, "yes"))
    assert (done["status"]["phase"], done["status"]["result"]["summary"]) == (
        "Succeeded", "Done: approved.")  # fmt: skip
    assert not done["status"].get("pendingToolCalls")

    other = await until(lambda: waiting("no"))
    ((call, _),) = other["pendingToolCalls"].items()
    answer = {"spec": {"toolApprovals": {call: {"decision": "Rejected", "reason": "not now"}}}}
    patched = http("PATCH", f"{CADRE}/tasks/no", answer,
                   content_type="application/merge-patch+json")  # fmt: skip
    assert patched.status_code == 200, patched.text
    refused = await until(lambda: ended(http, "no"))
    assert refused["status"]["result"]["summary"] == "Stopped: rejected."
    # An answer given stays as given: changing it is refused by the API server.
    change = {"spec": {"toolApprovals": {call: {"decision": "Approved"}}}}
    again = http("PATCH", f"{CADRE}/tasks/no", change, content_type="application/merge-patch+json")
    assert again.status_code == 422
    assert "an answer cannot be changed" in again.text
