"""A Task's maxCostUSD caps its whole delegation tree, end to end: before, a Task with
``maxCostUSD: "0.02"`` ended Succeeded with its tree at $0.103. Here the lead's own call fits
the budget, the engineer's delegated work (one long answer) does not: the tree's cost reaches
the root's status, the engineer's unfinished work is cancelled, the lead makes no further call
(its lesson included) and the root fails naming the tree's cost."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from tests.harness.conftest import ModelFactory, lesson_requests, until
from tests.localcluster.conftest import Http, Served
from tests.operator.conftest import CADRE, NS, agent_ready, create_agent, create_task, ended

TEAM = {
    "apiVersion": "cadre.dev/v1alpha1", "kind": "Team", "metadata": {"name": "thrifty"},
    "spec": {"lead": "lead", "members": [{"agent": "lead", "delegatesTo": ["engineer"]},
                                         {"agent": "engineer"}]},
}  # fmt: skip
LEAD = [
    {"text": "Delegating.", "tool_uses": [{"name": "delegate", "input": {
        "agent": "engineer", "title": "essay", "instructions": "Write at length."}}]},
    {"text": "Waiting.", "tool_uses": [{"name": "wait_for_results", "input": {}}]},
    {"text": "Accepting.", "tool_uses": [{"name": "review_result",
                                          "input": {"decision": "accept"}}]},
    {"text": "Done."},
]  # fmt: skip
# About 20,000 output tokens: $0.30 at claude-sonnet-4-6's $15 per million.
ENGINEER = [{"text": "word " * 20_000}]


def _warned(http: Http, task: str, reason: str) -> bool:
    events = http("GET", f"/api/v1/namespaces/{NS}/events").json()["items"]
    return any(
        e["involvedObject"]["name"] == task and e["reason"] == reason and e["type"] == "Warning"
        for e in events
    )


async def test_the_trees_spend_stops_the_tree_at_the_roots_max_cost(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory
) -> None:
    http = cluster.http
    url, model = await scripted({"agents": {"lead": LEAD, "engineer": ENGINEER}})
    create_agent(http, url, "lead", tools=[])
    create_agent(http, url, "engineer", tools=[])
    assert http("POST", f"{CADRE}/teams", TEAM).status_code == 201
    for name in ("lead", "engineer"):
        await until(lambda name=name: agent_ready(http, name), within=60)
    create_task(http, "budget", "Get an essay written.", agent=None, team="thrifty",
                limits={"maxCostUSD": "0.05"})  # fmt: skip
    root: dict[str, Any] = await until(lambda: ended(http, "budget"), within=120)

    status = root["status"]
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert (status["phase"], succeeded["reason"]) == ("Failed", "MaxCostReached")
    assert "the Task's tree cost $" in succeeded["message"]
    assert status["limits"]["maxCostUSD"] == "0.05"
    # The child got no more than what was left of the budget when it was created.
    children = [
        t for t in http("GET", f"{CADRE}/tasks").json()["items"] if t["spec"].get("parentRef")
    ]
    (child,) = children
    assert Decimal(child["spec"]["limits"]["maxCostUSD"]) <= Decimal("0.05")
    assert child["status"]["parent"] == "budget"  # the PARENT column
    # The tree's cost reached the root's status.
    below = Decimal((await until(lambda: ended(http, "budget")))["status"]["children"]["costUSD"])
    assert below >= Decimal(child["status"]["usage"]["costUSD"]) > Decimal("0.05")
    # The lead made no call after the tree's budget was spent, not even for its lesson.
    lead_calls = [r for r in model.requests if "Get an essay written" in str(r["messages"][0])]
    assert len(lead_calls) <= 2
    assert not [r for r in lesson_requests(model.requests) if r in lead_calls]
    assert await until(lambda: _warned(http, "budget", "MaxCostReached"))
