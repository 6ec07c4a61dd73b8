"""The API server failing the way real ones do (500 when etcd hiccups, 429 under load, 503)
while a Task runs: the operator and the harness retry, and the Task still ends Succeeded with
its one command run once. The errors are injected by the local API server
(``LocalApiServer.faults``) before the request does anything, as a real failure would."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from cadre.localcluster.apiserver.faults import Fault

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Served
from tests.operator.conftest import NS, agent_ready, create_agent, create_task, ended

ONCE = {"name": "bash", "input": {"command": "echo ran >> once.txt; cat once.txt"}}
STEPS: list[dict[str, Any]] = [
    {"text": "Working.", "tool_uses": [ONCE]},
    {"choices": [{"when_last_result_contains": "ran\n", "text": "Ran once."},
                 {"text": "Ran twice."}]},
]  # fmt: skip

FAULTS = [
    # What the operator writes for a sandbox.
    pytest.param([("create", "pods", "", 500, 2), ("create", "persistentvolumeclaims", "", 503, 2)],
                 id="sandbox-objects-500-503"),
    # The harness's and the operator's Task reads and status writes (the test's own polling,
    # python-requests, is left alone).
    pytest.param([("patch", "tasks", "status", 500, 2), ("patch", "tasks", "status", 429, 2),
                  ("get", "tasks", "", 500, 3, "OpenAPI-Generator"),
                  ("list", "tasks", "", 500, 1, "OpenAPI-Generator")], id="task-reads-writes"),
]  # fmt: skip


@pytest.mark.parametrize("faults", FAULTS)
async def test_a_task_succeeds_through_transient_api_errors(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory, faults: list[tuple[Any, ...]], tmp_path: Path,
) -> None:  # fmt: skip
    handle, http = cluster.handle, cluster.http
    server = handle.server
    assert server is not None
    url, _ = await scripted({"agents": {"engineer": STEPS}})

    def arm(lists: bool) -> list[Fault]:
        return [
            handle.call(server.faults.inject, verb, resource, code, times, sub, *client)
            for verb, resource, sub, code, times, *client in faults
            if (verb == "list") == lists
        ]

    # A list is what a client makes when it starts watching: armed before the harness starts.
    armed = arm(lists=True)
    create_agent(http, url)
    await until(lambda: agent_ready(http, "engineer"), within=60)
    armed += arm(lists=False)
    create_task(http, "flaky", "Run it once.")
    done = await until(lambda: ended(http, "flaky"), within=90)
    log = (tmp_path / "operator.log").read_text()[-3000:]
    assert done["status"]["phase"] == "Succeeded", (done["status"], log)
    assert done["status"]["result"]["summary"] == "Ran once."
    assert all(f.served == f.times for f in armed), [(f.verb, f.resource, f.served) for f in armed]
    await until(lambda: http("GET", f"/api/v1/namespaces/{NS}/pods/sbx-flaky").status_code == 404)


def tool(name: str, **input: Any) -> dict[str, Any]:
    return {"name": name, "input": input}


LEAD = [
    {"text": "Delegating.", "tool_uses": [tool("delegate", agent="engineer", instructions="Go.")]},
    {"text": "Waiting.", "tool_uses": [tool("wait_for_results")]},
    {"text": "Accepting.", "tool_uses": [tool("review_result", decision="accept")]},
    {"text": "Delegated, done and accepted."},
]
TEAM = {
    "apiVersion": "cadre.dev/v1alpha1", "kind": "Team", "metadata": {"name": "pair"},
    "spec": {"lead": "lead", "members": [{"agent": "lead", "delegatesTo": ["engineer"]},
                                         {"agent": "engineer"}]},
}  # fmt: skip


async def test_a_delegation_is_answered_through_transient_api_errors(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory,
) -> None:  # fmt: skip
    """The operator's create of the child Task fails twice (500): the request is answered
    anyway, once (one child), and the parent goes on."""
    handle, http = cluster.handle, cluster.http
    server = handle.server
    assert server is not None
    url, _ = await scripted({"agents": {"lead": LEAD, "engineer": STEPS}})
    create_agent(http, url, "lead", tools=[])
    create_agent(http, url, "engineer")
    assert http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/teams", TEAM).status_code == 201
    for name in ("lead", "engineer"):
        await until(lambda name=name: agent_ready(http, name), within=60)
    fault = handle.call(server.faults.inject, "create", "tasks", 500, 2, "", "OpenAPI-Generator")
    create_task(http, "pair-work", "Get it done.", agent=None, team="pair")
    done = await until(lambda: ended(http, "pair-work"), within=90)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert fault.served == 2
    tasks = http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks").json()["items"]
    assert len(tasks) == 2  # the parent and exactly one child
