"""Fifty Tasks at once across five Agents, in the local cluster: every one gets its own sandbox
pod, runs its command there, ends Succeeded with its own result, and leaves no sandbox pod."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Served
from tests.operator.conftest import CADRE, NS, agent_ready, create_agent, create_task

AGENTS = [f"agent-{n}" for n in range(5)]
PER_AGENT = 10
STEPS: list[dict[str, Any]] = [
    {
        "text": "Working.",
        "tool_uses": [{"name": "bash", "input": {"command": "echo sandbox=$HOSTNAME"}}],
    },
    {"text": "Done.", "delay_seconds": 0.2},
]


async def test_fifty_tasks_across_five_agents_all_complete(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory,
) -> None:  # fmt: skip
    http = cluster.http
    url, model = await scripted({"agents": dict.fromkeys(AGENTS, STEPS)})
    for agent in AGENTS:
        create_agent(http, url, agent, maxConcurrentTasks=PER_AGENT)
    for agent in AGENTS:
        await until(lambda agent=agent: agent_ready(http, agent), within=60)
    names = [f"{agent}-task-{i}" for agent in AGENTS for i in range(PER_AGENT)]
    for name in names:
        create_task(http, name, f"Task {name}.", agent=name.rsplit("-task-", 1)[0])

    def finished() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = http("GET", f"{CADRE}/tasks").json()["items"]
        done = [t for t in items if (t.get("status") or {}).get("phase") in ("Succeeded", "Failed")]
        return items if len(done) == len(names) else None

    items = await until(finished, within=240)
    outcome = {t["metadata"]["name"]: t["status"] for t in items}
    failed = {name: s for name, s in outcome.items() if s["phase"] != "Succeeded"}
    assert not failed, json.dumps(failed)[:3000]
    assert {s["agent"] for s in outcome.values()} == set(AGENTS)
    assert all(s["result"]["summary"] == "Done." for s in outcome.values())
    # Each Task ran its command in a sandbox pod of its own.
    seen = {
        match
        for request in model.requests
        for match in re.findall(r"sandbox=(sbx-[a-z0-9-]+)", json.dumps(request["messages"]))
    }
    assert seen == {f"sbx-{name}" for name in names}

    def sandboxes() -> list[str]:
        pods = http("GET", f"/api/v1/namespaces/{NS}/pods").json()["items"]
        return [p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith("sbx-")]

    await until(lambda: not sandboxes(), within=60)
