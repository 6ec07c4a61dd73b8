"""Traces of a Task tree end to end: the operator tells harnesses where to send spans
(``CADRE_OTLP_ENDPOINT``), the local cluster's in-memory OTLP receiver collects them, and the
tree is one trace across two harness pods: the root Task's span, the delegated Task's span
under it (its parent carried on the child Task), each session's ``invoke_agent`` span under its
Task's, and ``chat`` and ``execute_tool`` spans under those with the GenAI attributes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cadre.api.names import OTLP_ENDPOINT_ENV, TRACE_PARENT_ANNOTATION
from cadre.api.tracing import root_trace_id, task_span_id
from cadre.localcluster.traces import TraceCollector

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Served, for_pods
from tests.operator.conftest import CADRE, agent_ready, create_agent, create_task, operating


def tool(name: str, **input: Any) -> dict[str, Any]:
    return {"name": name, "input": input}


SCENARIO = {"agents": {
    "lead": [
        {"text": "Handing it over.", "tool_uses": [tool(
            "delegate", agent="engineer", title="write", instructions="Write a.txt.")]},
        {"text": "Waiting.", "tool_uses": [tool("wait_for_results")]},
        {"text": "Good.", "tool_uses": [tool("review_result", decision="accept")]},
        {"text": "a.txt is written."},
    ],
    "engineer": [
        {"text": "Writing.", "tool_uses": [tool("write", path="a.txt", content="a\n")]},
        {"text": "Written."},
    ],
}}  # fmt: skip
TEAM = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Team", "metadata": {"name": "platform"},
        "spec": {"lead": "lead", "members": [{"agent": "lead", "delegatesTo": ["engineer"]},
                                              {"agent": "engineer"}]}}  # fmt: skip


@pytest.fixture
async def collector() -> AsyncIterator[tuple[str, TraceCollector]]:
    received = TraceCollector()
    runner = web.AppRunner(received.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", received
    finally:
        await runner.cleanup()


async def test_a_task_tree_is_one_trace_across_harnesses(
    cluster: Served, scripted: ModelFactory, tmp_path: Path,
    collector: tuple[str, TraceCollector],
) -> None:  # fmt: skip
    http = cluster.http
    endpoint, received = collector
    url, _ = await scripted(SCENARIO)
    async with operating(cluster, tmp_path, **{OTLP_ENDPOINT_ENV: for_pods(endpoint)}):
        create_agent(http, url, "lead", tools=[])
        create_agent(http, url, "engineer")
        assert http("POST", f"{CADRE}/teams", TEAM).status_code == 201
        for name in ("lead", "engineer"):
            await until(lambda name=name: agent_ready(http, name), within=60)
        create_task(http, "tree", "Get a.txt written.", agent=None, team="platform")

        def ended() -> list[dict[str, Any]] | None:
            items = http("GET", f"{CADRE}/tasks").json()["items"]
            final = all((t.get("status") or {}).get("phase") == "Succeeded" for t in items)
            return items if len(items) == 2 and final else None

        tasks = {t["metadata"]["name"]: t for t in await until(ended, within=120)}
        # Each Task's own span is sent by the harness that ended it, within a second or so.
        await until(lambda: sum(s["name"].startswith("task ") for s in received.spans) == 2,
                    within=30)  # fmt: skip

    root = tasks.pop("tree")
    ((child_name, child),) = tasks.items()
    root_uid, child_uid = root["metadata"]["uid"], child["metadata"]["uid"]
    trace = f"{root_trace_id(root_uid):032x}"
    root_span, child_span = f"{task_span_id(root_uid):016x}", f"{task_span_id(child_uid):016x}"
    assert child["metadata"]["annotations"][TRACE_PARENT_ANNOTATION] == (
        f"00-{trace}-{root_span}-01")  # fmt: skip

    spans = received.spans
    assert {s["trace_id"] for s in spans} == {trace}, "the whole tree is one trace"
    by_name = {s["name"]: s for s in spans}
    assert by_name["task tree"]["span_id"] == root_span
    assert by_name["task tree"]["parent_span_id"] == ""
    assert by_name[f"task {child_name}"]["span_id"] == child_span
    assert by_name[f"task {child_name}"]["parent_span_id"] == root_span
    sessions = {s["attributes"]["gen_ai.agent.name"]: s for s in spans
                if s["name"].startswith("invoke_agent ")}  # fmt: skip
    assert sessions["lead"]["parent_span_id"] == root_span
    assert sessions["engineer"]["parent_span_id"] == child_span
    session_ids = {s["span_id"]: agent for agent, s in sessions.items()}
    session_ids |= {s["span_id"]: s["attributes"]["gen_ai.agent.name"] for s in spans
                    if s["name"].startswith("invoke_agent ")}  # fmt: skip
    chats = [s for s in spans if s["name"] == "chat claude-sonnet-4-6"]
    assert chats
    assert all(s["parent_span_id"] in session_ids for s in chats)
    for chat in chats:
        assert chat["attributes"]["gen_ai.provider.name"] == "anthropic"
        assert chat["attributes"]["gen_ai.usage.output_tokens"] > 0, chat
        assert chat["attributes"]["gen_ai.usage.input_tokens"] > 0, chat
        assert chat["attributes"]["gen_ai.response.id"]
    tools = {(s["name"], session_ids[s["parent_span_id"]]) for s in spans
             if s["name"].startswith("execute_tool ")}  # fmt: skip
    assert ("execute_tool write", "engineer") in tools
    assert ("execute_tool delegate", "lead") in tools
    assert all(s["end_ns"] >= s["start_ns"] > 0 for s in spans)


def test_a_malformed_export_is_refused_naming_why() -> None:
    async def post() -> tuple[int, str]:
        import aiohttp

        received = TraceCollector()
        runner = web.AppRunner(received.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            async with aiohttp.ClientSession() as session, session.post(
                f"http://127.0.0.1:{runner.addresses[0][1]}/v1/traces", data=b"\xff\x00junk",
                headers={"Content-Type": "application/x-protobuf"},
            ) as answer:  # fmt: skip
                return answer.status, await answer.text()
        finally:
            await runner.cleanup()

    status, text = asyncio.run(post())
    assert status == 400
    assert "not an OTLP trace export" in text
