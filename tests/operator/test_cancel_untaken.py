"""``spec.cancel`` ends a Task that no harness has taken: one whose Agent does not exist, and
one queued behind its Agent's busy slots. Before, both waited for ever (the harness acts on
cancel only for a session it runs). The real operator and harness in the local cluster."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Http, Served
from tests.operator.conftest import CADRE, NS, create_agent, create_task


def _condition(http: Http, task: str, kind: str) -> dict[str, Any] | None:
    status = http("GET", f"{CADRE}/tasks/{task}").json().get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


def _phase(http: Http, task: str) -> str | None:
    return (http("GET", f"{CADRE}/tasks/{task}").json().get("status") or {}).get("phase")


def _cancel(http: Http, task: str) -> None:
    patch = {"spec": {"cancel": True}}
    response = http("PATCH", f"{CADRE}/tasks/{task}", patch, "application/merge-patch+json")
    assert response.status_code == 200, response.text


def _events(http: Http, task: str, reason: str) -> list[dict[str, Any]]:
    events = http("GET", f"/api/v1/namespaces/{NS}/events").json()["items"]
    return [
        e for e in events
        if e["involvedObject"]["name"] == task and e["reason"] == reason and e["type"] == "Warning"
    ]  # fmt: skip


def _warned(http: Http, task: str, reason: str) -> bool:
    return bool(_events(http, task, reason))


async def test_a_task_for_a_missing_agent_can_be_cancelled(
    cluster: Served, operator: asyncio.subprocess.Process
) -> None:
    http = cluster.http
    create_task(http, "orphan", "Anyone?", agent="nobody")
    await until(lambda: (c := _condition(http, "orphan", "Accepted")) and c["status"] == "False")
    # The refusal is retried (the Agent may yet be created); its Event is counted, not copied.
    repeated = await until(
        lambda: [e for e in _events(http, "orphan", "AgentNotFound") if e["count"] >= 2]
    )
    assert len(_events(http, "orphan", "AgentNotFound")) == 1
    assert repeated[0]["lastTimestamp"] >= repeated[0]["firstTimestamp"]

    _cancel(http, "orphan")
    await until(lambda: _phase(http, "orphan") == "Cancelled")
    succeeded = _condition(http, "orphan", "Succeeded")
    assert succeeded is not None
    assert (succeeded["status"], succeeded["reason"]) == ("False", "Cancelled")
    assert "before any session started" in succeeded["message"]
    assert http("GET", f"{CADRE}/tasks/orphan").json()["status"]["completionTime"]
    assert await until(lambda: _warned(http, "orphan", "Cancelled"))


async def test_a_queued_task_can_be_cancelled_while_its_agent_is_busy(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory
) -> None:
    http = cluster.http
    # Every session's first model call takes a minute: the one slot stays busy.
    url, _ = await scripted({"agents": {"engineer": [{"text": "Done.", "delay_seconds": 60}]}})
    create_agent(http, url, maxConcurrentTasks=1)
    create_task(http, "first", "Take your time.")
    await until(lambda: _phase(http, "first") == "Running")
    create_task(http, "second", "Wait your turn.")
    await until(lambda: (c := _condition(http, "second", "Queued")) and c["status"] == "True")

    _cancel(http, "second")
    await until(lambda: _phase(http, "second") == "Cancelled")
    queued = _condition(http, "second", "Queued")
    assert queued is not None
    assert queued["status"] == "False"
    assert _phase(http, "first") == "Running"  # the session holding the slot is untouched

    _cancel(http, "first")  # a running session: the harness stops it, as before
    await until(lambda: _phase(http, "first") == "Cancelled")
    # Each ended Task has one Warning Event saying why (its Succeeded condition).
    await until(
        lambda: _warned(http, "first", "Cancelled") and _warned(http, "second", "Cancelled")
    )
    (second,) = _events(http, "second", "Cancelled")
    assert second["count"] == 1
    assert "before any session started" in second["message"]
