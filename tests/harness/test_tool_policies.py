"""Tool permission policies: the decision for a call (pure), and sessions that follow them
against the scripted model and a real sandbox server: a denied call gets an error naming the
rule and never runs; an ``Ask`` call pauses the session (holding nothing) until a human
answers, the answer applied once even by a resumed session; no answer by the deadline takes
the Policy's ``onTimeout``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anthropic
import pytest
from cadre.api.policy import Decision
from cadre.harness.permissions import Governance, ToolAnswer
from cadre.harness.pricing import prices_for
from cadre.harness.replay import AWAITING_APPROVAL, replay
from cadre.harness.session import Session, SessionConfig
from cadre.harness.sessionlog import SessionLog, read

from tests.harness.conftest import ModelFactory, sandbox_client, until
from tests.sandbox.conftest import SandboxProcess


def _policy(name: str, rules: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"toolRules": rules, **spec}}


def test_the_first_matching_rule_decides_and_chaining_never_slips_through_an_allow() -> None:
    governance = Governance.select([
        _policy("b-later", [{"tools": ["*"], "decision": "Deny"}]),
        _policy("a-first", [
            {"name": "status-ok", "tools": ["bash"], "commands": ["git status*"],
             "decision": "Allow"},
            {"name": "no-push", "tools": ["bash"], "commands": ["*git push*"], "decision": "Ask",
             "message": "pushes need a human"},
            {"tools": ["read", "write"], "paths": ["secrets/*", "*.env"], "decision": "Deny"},
        ]),
        _policy("elsewhere", [], agentSelector={"matchLabels": {"team": "other"}}),
    ], {"team": "platform"})  # fmt: skip
    assert governance.names == ["a-first", "b-later"]
    assert governance.decide("bash", {"command": "git status -s"}).decision == Decision.ALLOW
    # Chained onto an allowed prefix: not allowed by it; the next rules decide.
    chained = governance.decide("bash", {"command": "git status; git push origin main"})
    assert (chained.decision, chained.rule) == (Decision.ASK, "no-push")
    assert governance.decide("read", {"path": "./secrets/key"}).rule == "rule 3"
    assert governance.decide("read", {"path": "src/app.py"}).policy == "b-later"
    assert Governance.select([], {}).decide("bash", {"command": "rm -rf /"}).decision == "Allow"


def test_without_a_matching_rule_the_strictest_default_applies() -> None:
    governance = Governance.select([
        _policy("lenient", [], defaultDecision="Allow"),
        _policy("careful", [], defaultDecision="Ask", approval={"timeout": "5m"}),
    ], {})  # fmt: skip
    decided = governance.decide("write", {"path": "a.txt"})
    assert (decided.decision, decided.policy, decided.timeout_seconds) == ("Ask", "careful", 300)


def _config() -> SessionConfig:
    return SessionConfig(task="ns/t", agent="engineer", role="Writes code", prompt="Work.",
                         model="claude-sonnet-4-6")  # fmt: skip


STEPS = [
    {"text": "Cleaning.", "tool_uses": [{"name": "bash", "input": {
        "command": "echo gone > cleaned.txt"}}]},
    {"choices": [
        {"when_last_result_contains": "denied", "text": "Not allowed, stopping."},
        {"when_last_result_contains": "rejected", "text": "Rejected, stopping."},
        {"text": "Cleaned."},
    ]},
]  # fmt: skip


async def _run(url: str, sandbox: SandboxProcess, path: Path, governance: Governance,
               answers: dict[str, ToolAnswer]) -> dict[str, Any]:  # fmt: skip
    client = anthropic.AsyncAnthropic(api_key="sk", base_url=url, max_retries=0)
    tools = sandbox_client(sandbox)
    log = SessionLog.open(path)

    async def governed() -> Governance:
        return governance

    try:
        session = Session(_config(), log, client, tools, prices_for("claude-sonnet-4-6"),
                          lambda _: None, governance=governed, answer_of=answers.get)  # fmt: skip
        return await session.run()
    finally:
        log.close()
        await tools.close()
        await client.close()


async def test_a_denied_call_never_runs_and_the_model_is_told_which_rule(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, _ = await scripted({"agents": {"engineer": STEPS}})
    governance = Governance.select([_policy("guard", [
        {"name": "no-echo", "tools": ["bash"], "commands": ["echo*"], "decision": "Deny",
         "message": "no writing"}])], {})  # fmt: skip
    outcome = await _run(url, sandbox, tmp_path / "log.jsonl", governance, {})
    assert outcome["result"] == "Not allowed, stopping."
    assert not (sandbox.workspace / "cleaned.txt").exists()
    (result,) = [e for e in read(tmp_path / "log.jsonl") if e["type"] == "agent.tool_result"]
    assert result["is_error"] is True
    assert result["content"] == "This call is denied by Policy guard, no-echo: no writing."


@pytest.mark.parametrize("approved", [True, False])
async def test_an_ask_call_waits_for_a_human_and_the_answer_is_applied_once(
    approved: bool, scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, model = await scripted({"agents": {"engineer": STEPS}})
    asking = [{"tools": ["bash"], "decision": "Ask", "message": "a human looks first"}]
    governance = Governance.select([_policy("guard", asking)], {})
    answers: dict[str, ToolAnswer] = {}
    path = tmp_path / "log.jsonl"
    paused = await _run(url, sandbox, path, governance, answers)
    assert (paused["outcome"], paused["reason"]) == ("Waiting", AWAITING_APPROVAL)
    ((call_id, pending),) = paused["pending"].items()
    assert (pending["tool"], pending["policy"], pending["rule"]) == ("bash", "guard", "rule 1")
    assert "echo gone" in pending["input"]
    assert not (sandbox.workspace / "cleaned.txt").exists()
    # A harness restarted while it waits: still waiting, nothing new in the log.
    before = len(read(path))
    again = await _run(url, sandbox, path, governance, answers)
    assert again["reason"] == AWAITING_APPROVAL
    assert len(read(path)) == before
    answers[call_id] = ToolAnswer(approved, "looks fine" if approved else "not today", "alice")
    done = await _run(url, sandbox, path, governance, answers)
    assert done["result"] == ("Cleaned." if approved else "Rejected, stopping.")
    assert (sandbox.workspace / "cleaned.txt").exists() is approved
    # Seen again (the Task's answer stays in its spec): applied once, never twice.
    await _run(url, sandbox, path, governance, answers)
    events = read(path)
    confirmations = [e for e in events if e["type"] == "user.tool_confirmation"]
    assert [(c["approved"], c["by"]) for c in confirmations] == [(approved, "alice")]
    assert len([e for e in events if e["type"] == "agent.tool_decision"]) == 1
    assert replay(events, prices_for("claude-sonnet-4-6")).outcome is not None
    assert len(model.requests) == 2  # the call's turn and the one after: nothing repeated


async def test_no_answer_by_the_deadline_takes_the_policys_on_timeout(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, _ = await scripted({"agents": {"engineer": STEPS}})
    governance = Governance.select([_policy("guard", [{"tools": ["bash"], "decision": "Ask"}],
        approval={"timeout": "0.3s", "onTimeout": "Approve"})], {})  # fmt: skip
    path = tmp_path / "log.jsonl"
    paused = await _run(url, sandbox, path, governance, {})
    assert paused["reason"] == AWAITING_APPROVAL
    (decided,) = [e for e in read(path) if e["type"] == "agent.tool_decision"]
    await until(lambda: time.time() >= decided["time"] + decided["timeout_seconds"])
    done = await _run(url, sandbox, path, governance, {})
    assert done["result"] == "Cleaned."
    (confirmed,) = [e for e in read(path) if e["type"] == "user.tool_confirmation"]
    assert (confirmed["approved"], confirmed["by"]) == (True, "the timeout")
