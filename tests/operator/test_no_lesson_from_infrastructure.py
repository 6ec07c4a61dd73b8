"""A Task that fails for something outside its work (here the model API refusing the key)
teaches nothing about the work: no lesson goes into the Agent's memory, where it would be
read in every later Task's prompt. (Lessons from work that succeeded or failed on its own
merits are written as before: test_teams_in_the_local_cluster, test_session_loop.)"""

from __future__ import annotations

import asyncio
from typing import Any

import yaml

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Http, Served
from tests.operator.conftest import NS, create_agent, create_task, ended


def _entries(http: Http) -> list[dict[str, object]]:
    memory = http("GET", f"/api/v1/namespaces/{NS}/configmaps/memory-engineer").json()
    return yaml.safe_load((memory.get("data") or {}).get("entries.yaml") or "") or []


async def test_an_infrastructure_failure_leaves_no_lesson(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory
) -> None:
    http = cluster.http
    refused = {"status": 401, "type": "authentication_error", "message": "invalid x-api-key"}
    steps = [{"fail_first": [refused], "text": "Never said."}]
    url, _ = await scripted({"agents": {"engineer": steps}})
    create_agent(http, url)
    create_task(http, "unlucky", "Write a.txt.")
    task = await until(lambda: ended(http, "unlucky"))
    succeeded = next(c for c in task["status"]["conditions"] if c["type"] == "Succeeded")
    assert (task["status"]["phase"], succeeded["reason"]) == ("Failed", "ModelError")
    assert _entries(http) == []
    # The failure is a Warning Event on the Task, saying why.

    def warnings() -> list[dict[str, Any]]:
        events = http("GET", f"/api/v1/namespaces/{NS}/events").json()["items"]
        return [
            e for e in events
            if e["involvedObject"]["name"] == "unlucky" and e["type"] == "Warning"
        ]  # fmt: skip

    (warning,) = await until(warnings)
    assert warning["reason"] == "ModelError"
    assert warning["message"].startswith("Failed: the model API answered 401")
