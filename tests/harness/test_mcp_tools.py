"""MCP tools on the brain side, against a real MCP server (the ``mcp`` SDK, HTTPS, bearer
token), the scripted model and a real sandbox server: the harness lists only the allowed tools,
calls them with the credential, and the token appears nowhere the sandbox or the session log
can show; MCP tools ask a human unless a Policy rule allows them; a server refusing the
credential leaves its tools out, saying why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
from cadre.api.agent import McpServer
from cadre.harness.mcp_tools import Endpoint, McpTools
from cadre.harness.permissions import Governance
from cadre.harness.pricing import prices_for
from cadre.harness.replay import AWAITING_APPROVAL, State
from cadre.harness.session import Session, SessionConfig, ToolSets
from cadre.harness.sessionlog import SessionLog, read

from tests.harness.conftest import ModelFactory, sandbox_client
from tests.harness.mcp_server import McpServerProcess
from tests.sandbox.conftest import SandboxProcess

CREATE = "mcp__tickets__create_ticket"


def _tools(server: McpServerProcess, token: str | None = None) -> McpTools:
    spec = McpServer.model_validate({
        "name": "tickets", "url": server.url, "tools": ["create_ticket", "whoami"],
        "credential": {"secretRef": {"name": "tickets", "key": "token"}},
        "caBundle": server.ca_bundle,
    })  # fmt: skip
    return McpTools([Endpoint(spec, f"Bearer {token or server.token}")])


def test_mcp_tools_ask_a_human_unless_a_rule_allows_them() -> None:
    nobody = Governance.select([], {})
    assert (nobody.decide(CREATE, {}).decision, nobody.decide("bash", {}).decision) == (
        "Ask", "Allow")  # fmt: skip
    lenient = Governance.select([{"metadata": {"name": "p"}, "spec": {}}], {})
    assert lenient.decide(CREATE, {}).rule == "mcpDefault"
    allowing = Governance.select([{"metadata": {"name": "p"}, "spec": {"toolRules": [
        {"tools": [CREATE], "decision": "Allow"}]}}], {})  # fmt: skip
    assert allowing.decide(CREATE, {}).decision == "Allow"
    strict = Governance.select([{"metadata": {"name": "p"}, "spec": {"defaultDecision": "Deny"}}],
                               {})  # fmt: skip
    assert strict.decide(CREATE, {}).decision == "Deny"


async def test_the_harness_lists_only_allowed_tools_and_a_bad_token_is_refused(
    mcp_server: McpServerProcess,
) -> None:
    tools = _tools(mcp_server)
    refused = _tools(mcp_server, token="wrong")
    try:
        definitions = await tools.definitions()
        assert sorted(d["name"] for d in definitions) == [CREATE, "mcp__tickets__whoami"]
        assert tools.versions["tickets"] in ("2026-07-28", "2025-11-25")
        outcome = await tools.call("toolu_1", "mcp__tickets__delete_everything", {}, State())
        assert outcome.is_error
        assert "no MCP tool" in outcome.content
        assert await refused.definitions() == []
        assert "tickets" in refused.unavailable
    finally:
        await tools.close()
        await refused.close()
    assert [c.get("tool") for c in mcp_server.calls() if "tool" in c] == []
    assert any("refused" in c for c in mcp_server.calls())


ENVIRONMENTS = "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'"
"""Every environment the sandbox can read."""
STEPS = [
    {"text": "Filing it.", "tool_uses": [
        {"name": CREATE, "input": {"title": "Disk full on build-3"}},
        {"name": "bash", "input": {"command": ENVIRONMENTS}},
    ]},
    {"choices": [
        {"when_last_result_contains": "TICKET-1", "text": "Filed TICKET-1."},
        {"when_last_result_contains": "waits", "text": "Waiting."},
        {"text": "Could not file it."},
    ]},
]  # fmt: skip


async def _session(url: str, sandbox: SandboxProcess, path: Path, mcp: McpTools,
                   policies: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    client = anthropic.AsyncAnthropic(api_key="sk", base_url=url, max_retries=0)
    tools = sandbox_client(sandbox)
    log = SessionLog.open(path)
    governance = Governance.select(policies, {})

    async def governed() -> Governance:
        return governance

    config = SessionConfig(task="ns/t", agent="engineer", role="Operates", prompt="File it.",
                           model="claude-sonnet-4-6",
                           extra_tools=tuple(await mcp.definitions()))  # fmt: skip
    try:
        session = Session(config, log, client, tools, prices_for("claude-sonnet-4-6"),
                          lambda _: None, harness_tools=ToolSets(mcp),
                          governance=governed)  # fmt: skip
        return await session.run()
    finally:
        log.close()
        await tools.close()
        await client.close()


async def test_an_mcp_call_carries_a_credential_the_sandbox_and_the_log_never_see(
    mcp_server: McpServerProcess, scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, model = await scripted({"agents": {"engineer": STEPS}})
    mcp = _tools(mcp_server)
    allow = [{"metadata": {"name": "ops"}, "spec": {"toolRules": [
        {"tools": [CREATE], "decision": "Allow"}]}}]  # fmt: skip
    path = tmp_path / "log.jsonl"
    try:
        outcome = await _session(url, sandbox, path, mcp, allow)
    finally:
        await mcp.close()
    assert outcome["result"] == "Filed TICKET-1."
    assert [c["title"] for c in mcp_server.calls() if c.get("tool") == "create_ticket"] == [
        "Disk full on build-3"]  # fmt: skip
    (offered,) = [t for t in model.requests[0]["tools"] if t["name"] == CREATE]
    assert offered["input_schema"]["properties"]["title"]["type"] == "string"
    results = {e["tool_use_id"]: e for e in read(path) if e["type"] == "agent.tool_result"}
    assert len(results) == 2
    environment = next(r["content"] for r in results.values() if "PATH=" in r["content"])
    # What the sandbox can show the model (its whole environment, every process's), the
    # workspace and the session log hold no trace of the token.
    assert mcp_server.token not in environment
    assert mcp_server.token not in path.read_text()
    for file in sandbox.workspace.rglob("*"):
        assert not file.is_file() or mcp_server.token not in file.read_text(errors="replace")
    assert mcp_server.token not in str(model.requests)


async def test_without_a_policy_an_mcp_call_waits_for_a_human(
    mcp_server: McpServerProcess, scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, _ = await scripted({"agents": {"engineer": STEPS}})
    mcp = _tools(mcp_server)
    try:
        paused = await _session(url, sandbox, tmp_path / "log.jsonl", mcp, [])
    finally:
        await mcp.close()
    assert paused["reason"] == AWAITING_APPROVAL
    ((_, pending),) = paused["pending"].items()
    assert (pending["tool"], pending["policy"], pending["rule"]) == (CREATE, None, "mcpDefault")
    assert "ask a human" in pending["message"]
    assert mcp_server.calls() == []
