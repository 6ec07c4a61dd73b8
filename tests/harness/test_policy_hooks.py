"""Policy hooks: CEL answers (pure), and sessions against the scripted model, a real sandbox
server and a real HTTPS webhook (its own CA, made with trustme): a CEL hook rewrites a call's
input before the rules judge it; a webhook refuses a call, and a failing webhook counts as a no
under ``Fail`` and a yes under ``Ignore``; AfterToolCall hooks annotate a result or stop the
session; a BeforeDelivery command that fails in the sandbox sends the work back; TaskEnd
webhooks hear how the Task ended; a resumed session never asks a hook twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest
from cadre.api.policy import Hook, HookPoint, PolicySpec
from cadre.harness.hooks import WebhookError, evaluate_cel, read_review
from cadre.harness.permissions import Governance
from cadre.harness.pricing import prices_for
from cadre.harness.session import Session, SessionConfig
from cadre.harness.sessionlog import SessionLog, read

from tests.harness.conftest import ModelFactory, sandbox_client
from tests.harness.webhooks import Webhook
from tests.sandbox.conftest import SandboxProcess


def _hook(**fields: Any) -> Hook:
    return Hook.model_validate({"name": "h", "at": "BeforeToolCall", **fields})


def test_a_cel_hook_answers_yes_no_rewrite_or_note_and_fails_closed() -> None:
    before, after = HookPoint.BEFORE_TOOL_CALL, HookPoint.AFTER_TOOL_CALL
    given = {"tool": "bash", "input": {"command": "pip install x"}}
    assert evaluate_cel(_hook(cel={"expression": "tool == 'bash'"}), before, given).allowed
    no = evaluate_cel(_hook(cel={"expression": "false", "message": "never"}), before, given)
    assert (no.allowed, no.message) == (False, "never")
    rewrite = "{'command': input.command + ' --no-cache-dir'}"
    rewritten = evaluate_cel(_hook(cel={"expression": rewrite}), before, given)
    assert rewritten.input == {"command": "pip install x --no-cache-dir"}
    note = _hook(at="AfterToolCall", cel={"expression": "result.isError ? 'read the log' : ''"})
    noted = evaluate_cel(note, after, {**given, "result": {"content": "x", "isError": True}})
    assert (noted.allowed, noted.note) == (True, "read the log")
    # What cannot decide says no, with why: a missing field, a type the point cannot use, an
    # expression that does not compile.
    missing = evaluate_cel(_hook(cel={"expression": "input.path == 'x'"}), before, given)
    assert not missing.allowed
    assert "path" in missing.message
    wrong = evaluate_cel(_hook(cel={"expression": "'a string'"}), before, given)
    assert not wrong.allowed
    assert "BeforeToolCall cannot use" in wrong.message
    broken = evaluate_cel(_hook(cel={"expression": "input.("}), before, given)
    assert not broken.allowed
    assert "invalid expression" in broken.message
    spec = PolicySpec.model_validate({"hooks": [
        {"name": "fine", "at": "BeforeToolCall", "cel": {"expression": "true"}},
        {"name": "broken", "at": "BeforeToolCall", "cel": {"expression": "input.("}},
    ]})  # fmt: skip
    (why,) = spec.invalid_hooks()
    assert why.startswith("spec.hooks[1].cel.expression: ")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "no response object"),
        ({"response": {"uid": "other", "allowed": True}}, "response.uid"),
        ({"response": {"uid": "u", "allowed": "yes"}}, "response.allowed"),
        ({"response": {"uid": "u", "allowed": True, "input": "x"}}, "response.input"),
        ({"response": {"uid": "u", "allowed": True, "note": "n"}}, "response.note"),
    ],
)
def test_a_malformed_webhook_answer_is_a_failure_naming_the_field(body: Any, words: str) -> None:
    with pytest.raises(WebhookError, match=words.replace(".", r"\.")):
        read_review(body, "u", HookPoint.BEFORE_TOOL_CALL)


def _config() -> SessionConfig:
    return SessionConfig(task="ns/t", agent="engineer", role="Writes code", prompt="Work.",
                         model="claude-sonnet-4-6")  # fmt: skip


async def _run(url: str, sandbox: SandboxProcess, path: Path, spec: dict[str, Any],
               labels: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    client = anthropic.AsyncAnthropic(api_key="sk", base_url=url, max_retries=0)
    tools = sandbox_client(sandbox)
    log = SessionLog.open(path)
    governance = Governance.select([{"metadata": {"name": "guard"}, "spec": spec}], labels or {})

    async def governed() -> Governance:
        return governance

    try:
        session = Session(_config(), log, client, tools, prices_for("claude-sonnet-4-6"),
                          lambda _: None, governance=governed)  # fmt: skip
        return await session.run()
    finally:
        log.close()
        await tools.close()
        await client.close()


CLEAN = [
    {"text": "Cleaning.", "tool_uses": [{"name": "bash", "input": {
        "command": "echo gone > cleaned.txt"}}]},
    {"choices": [
        {"when_last_result_contains": "denied", "text": "Not allowed, stopping."},
        {"text": "Cleaned."},
    ]},
]  # fmt: skip


def _events(path: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in read(path) if e["type"] == kind]


async def test_a_cel_hook_rewrites_the_input_and_the_rules_judge_the_rewrite(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, _ = await scripted({"agents": {"engineer": CLEAN}})
    redirect = ("input.command.contains('cleaned') && agent.labels.team == 'platform' ? "
                "{'command': 'echo gone > rewritten.txt'} : true")  # fmt: skip
    spec = {
        "hooks": [{"name": "redirect", "at": "BeforeToolCall", "tools": ["bash"],
                   "cel": {"expression": redirect}}],
        "toolRules": [{"name": "keep-cleaned", "tools": ["bash"], "commands": ["*cleaned*"],
                       "decision": "Deny"}],
    }  # fmt: skip
    path = tmp_path / "log.jsonl"
    outcome = await _run(url, sandbox, path, spec, {"team": "platform"})
    assert outcome["result"] == "Cleaned."
    assert (sandbox.workspace / "rewritten.txt").read_text() == "gone\n"
    assert not (sandbox.workspace / "cleaned.txt").exists()
    (sent,) = _events(path, "agent.tool_use")
    assert sent["input"] == {"command": "echo gone > rewritten.txt"}
    (result,) = _events(path, "agent.tool_result")
    assert result["content"].startswith("[input rewritten by Policy guard, hook redirect: ")


async def test_after_call_hooks_annotate_the_result_or_stop_the_session(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, _ = await scripted({"agents": {"engineer": CLEAN}})
    spec = {"hooks": [
        {"name": "remind", "at": "AfterToolCall", "cel": {"expression": "'check the file'"}},
        {"name": "no-writes", "at": "AfterToolCall", "tools": ["bash"],
         "cel": {"expression": "!input.command.contains('>')", "message": "a write was made"}},
    ]}  # fmt: skip
    path = tmp_path / "log.jsonl"
    outcome = await _run(url, sandbox, path, spec)
    assert (outcome["outcome"], outcome["reason"]) == ("Failed", "StoppedByHook")
    assert "Policy guard, hook no-writes stopped the session" in outcome["message"]
    assert "a write was made" in outcome["message"]
    (result,) = _events(path, "agent.tool_result")
    assert result["content"].endswith("[Policy guard, hook remind] check the file")


@pytest.mark.parametrize(
    ("answer", "failure_policy", "runs"),
    [("deny", "Fail", False), ("500", "Fail", False), ("500", "Ignore", True)],
)
async def test_a_webhook_refuses_a_call_and_its_failures_follow_the_failure_policy(
    answer: str, failure_policy: str, runs: bool, webhook: Webhook,
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path,
) -> None:  # fmt: skip
    url, _ = await scripted({"agents": {"engineer": CLEAN}})
    webhook.answers["BeforeToolCall"] = answer
    spec = {
        "hooks": [
            {
                "name": "board",
                "at": "BeforeToolCall",
                "webhook": {
                    "url": webhook.url,
                    "caBundle": webhook.ca_bundle,
                    "failurePolicy": failure_policy,
                },
            }
        ]
    }
    path = tmp_path / "log.jsonl"
    outcome = await _run(url, sandbox, path, spec, {"team": "platform"})
    assert (sandbox.workspace / "cleaned.txt").exists() is runs
    assert outcome["result"] == ("Cleaned." if runs else "Not allowed, stopping.")
    (request,) = webhook.requests
    assert request["kind"] == "HookReview"
    sent = request["request"]
    assert sent["uid"].startswith("ns/t/BeforeToolCall/")
    assert (sent["tool"], sent["input"], sent["policy"], sent["hook"]) == (
        "bash",
        {"command": "echo gone > cleaned.txt"},
        "guard",
        "board",
    )
    assert sent["agent"] == {"name": "engineer", "labels": {"team": "platform"}}
    assert sent["task"] == {"namespace": "ns", "name": "t"}
    (hooked,) = _events(path, "agent.hook")
    if answer == "deny":
        (result,) = _events(path, "agent.tool_result")
        assert result["content"] == (
            "This call is denied by Policy guard, hook board: the change board says no"
        )
    else:
        assert "HTTP 500" in hooked["failure"]


async def test_a_webhook_without_the_ca_is_not_trusted(
    webhook: Webhook, scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, _ = await scripted({"agents": {"engineer": CLEAN}})
    spec = {"hooks": [{"name": "board", "at": "BeforeToolCall", "webhook": {"url": webhook.url}}]}
    path = tmp_path / "log.jsonl"
    outcome = await _run(url, sandbox, path, spec)
    assert outcome["result"] == "Not allowed, stopping."
    assert webhook.requests == []
    (hooked,) = _events(path, "agent.hook")
    assert "CERTIFICATE_VERIFY_FAILED" in hooked["failure"]


async def test_a_resumed_session_never_asks_a_hook_twice(
    webhook: Webhook, scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, _model = await scripted({"agents": {"engineer": CLEAN}})
    spec = {
        "hooks": [
            {
                "name": "board",
                "at": "BeforeToolCall",
                "webhook": {"url": webhook.url, "caBundle": webhook.ca_bundle},
            }
        ]
    }
    path = tmp_path / "log.jsonl"
    await _run(url, sandbox, path, spec)
    # The harness died right after the hook's answer was logged: cut the log there.
    lines = path.read_text().splitlines(keepends=True)
    (at,) = [i for i, line in enumerate(lines) if '"agent.hook"' in line]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("".join(lines[: at + 1]))
    outcome = await _run(url, sandbox, cut, spec)
    assert outcome["result"] == "Cleaned."
    assert len(webhook.requests) == 1
    assert len(_events(cut, "agent.hook")) == 1


DELIVER = [
    {"text": "Drafting.", "tool_uses": [{"name": "bash", "input": {
        "command": "echo draft > notes.txt"}}]},
    {"text": "Done."},
    {"choices": [
        {"when_last_message_contains": "sent back", "text": "Fixing.", "tool_uses": [
            {"name": "bash", "input": {"command": "touch tests-pass"}}]},
    ]},
    {"text": "Done, tests pass."},
]  # fmt: skip


async def test_a_before_delivery_command_sends_failing_work_back_until_it_passes(
    webhook: Webhook, scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, _ = await scripted({"agents": {"engineer": DELIVER}})
    spec = {"hooks": [
        {"name": "tests", "at": "BeforeDelivery",
         "command": {"command": "test -f tests-pass || { echo 'FAILED: 1 test'; exit 1; }"}},
        {"name": "notify", "at": "TaskEnd", "webhook": {"url": webhook.url,
                                                        "caBundle": webhook.ca_bundle}},
    ]}  # fmt: skip
    path = tmp_path / "log.jsonl"
    outcome = await _run(url, sandbox, path, spec)
    assert (outcome["outcome"], outcome["result"]) == ("Succeeded", "Done, tests pass.")
    (feedback,) = _events(path, "user.hook_feedback")
    assert "sent back by Policy guard, hook tests (round 1 of at most 3)" in feedback["content"]
    assert "FAILED: 1 test" in feedback["content"]
    answers = [(e["point"], e["allowed"]) for e in _events(path, "agent.hook")]
    assert answers == [("BeforeDelivery", False), ("BeforeDelivery", True), ("TaskEnd", True)]
    (notice,) = webhook.requests
    assert notice["request"]["outcome"]["phase"] == "Succeeded"
    assert notice["request"]["result"] == "Done, tests pass."


async def test_work_still_refused_after_the_rounds_fails_the_task(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    script = [*DELIVER[:2], {"text": "Still done."}]
    url, _ = await scripted({"agents": {"engineer": script}})
    spec: dict[str, Any] = {
        "maxDeliveryRounds": 1,
        "hooks": [{"name": "tests", "at": "BeforeDelivery", "command": {"command": "exit 3"}}],
    }
    outcome = await _run(url, sandbox, tmp_path / "log.jsonl", spec)
    assert (outcome["outcome"], outcome["reason"]) == ("Failed", "DeliveryRefused")
    assert "still refused the result after 1 rounds" in outcome["message"]
