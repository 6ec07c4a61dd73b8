"""An Agent's counts (Active, Queued, memory entries): the pure rules, and end to end in the
local cluster — one slot, two Tasks: one works while the other waits with a Queued condition
saying why, then none; the lesson written at each Task's end shows up as memory entries."""

from __future__ import annotations

import asyncio
from typing import Any

from cadre.operator.agent_status import agent_counts, memory_size

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Served
from tests.operator.conftest import CADRE, agent_ready, create_agent, create_task, ended


def test_counts_follow_the_phases() -> None:
    phases = ["Running", "Pending", "Pending", "Waiting", "InReview", "Running"]
    assert agent_counts(phases, 7) == {"activeTasks": 2, "queuedTasks": 2, "memoryEntries": 7}
    assert agent_counts([], 0) == {"activeTasks": 0, "queuedTasks": 0, "memoryEntries": 0}


def test_memory_size_counts_entries_and_ignores_what_is_broken() -> None:
    assert memory_size("[]\n") == 0
    assert memory_size("") == 0
    assert memory_size("- {text: a}\n- {text: b}\n") == 2
    assert memory_size("a: [unclosed") is None
    assert memory_size("{text: a}") is None


STEPS: list[dict[str, Any]] = [
    {"text": "Working.", "delay_seconds": 1.5,
     "tool_uses": [{"name": "bash", "input": {"command": "true"}}]},
    {"text": "Done."},
]  # fmt: skip


async def test_one_slot_two_tasks_one_active_one_queued(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory,
) -> None:  # fmt: skip
    http = cluster.http
    url, _ = await scripted({"agents": {"engineer": STEPS}})
    create_agent(http, url, maxConcurrentTasks=1)
    await until(lambda: agent_ready(http, "engineer"), within=60)
    create_task(http, "first", "First.")
    create_task(http, "second", "Second.")

    def counts() -> tuple[int, int, int]:
        status = http("GET", f"{CADRE}/agents/engineer").json().get("status") or {}
        return (status.get("activeTasks", -1), status.get("queuedTasks", -1),
                status.get("memoryEntries", -1))  # fmt: skip

    await until(lambda: counts()[:2] == (1, 1), within=30)

    # The waiting one says why, on the Task itself.
    def queued(name: str) -> dict[str, Any] | None:
        status = http("GET", f"{CADRE}/tasks/{name}").json().get("status") or {}
        return next((c for c in status.get("conditions", []) if c["type"] == "Queued"), None)

    waiting = await until(lambda: queued("first") or queued("second"), within=30)
    assert (waiting["status"], waiting["reason"]) == ("True", "NoFreeSlot")
    assert "works at most 1 Tasks at once" in waiting["message"]
    for name in ("first", "second"):
        done = await until(lambda name=name: ended(http, name), within=60)
        assert done["status"]["phase"] == "Succeeded"
    # Each Task ended with a lesson in the Agent's memory.
    await until(lambda: counts() == (0, 0, 2), within=30)
    assert [queued(n)["status"] for n in ("first", "second") if queued(n)] == ["False"]
