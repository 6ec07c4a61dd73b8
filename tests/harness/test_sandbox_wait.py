"""A session waits for its sandbox on the harness's watch: it takes the first copy of its Task
that is not older than its own request and says the sandbox is ready, and reads the Task itself
only as a safety net."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cadre.api.types import Obj
from cadre.harness import cluster_sandbox
from cadre.harness.cluster_sandbox import TaskCopies, _ready


def _task(version: int, ready: bool = False, address: str | None = None) -> Obj:
    session: dict[str, Any] = {"sandboxRequested": True, "sandboxReady": ready}
    if address:
        session["sandboxAddress"] = address
    return {
        "metadata": {"name": "t", "resourceVersion": str(version)},
        "status": {"session": session},
    }


async def _never_read() -> Obj:
    raise AssertionError("the Task was read although the watch had the answer")


async def test_a_ready_copy_older_than_the_request_is_not_taken() -> None:
    copies = TaskCopies()
    copies.publish(_task(4, ready=True, address="10.0.0.1:8080"))  # the previous sandbox
    waiting = asyncio.ensure_future(copies.wait_for("t", _task(5), _ready, _never_read, 30))
    await asyncio.sleep(0)
    copies.publish(_task(4, ready=True, address="10.0.0.1:8080"))  # the watch lagging behind
    await asyncio.sleep(0)
    assert not waiting.done()
    copies.publish(_task(5))  # the request itself comes through
    copies.publish(_task(6, ready=True, address="10.0.0.2:8080"))
    found = await asyncio.wait_for(waiting, 5)
    assert found is not None
    assert found["status"]["session"]["sandboxAddress"] == "10.0.0.2:8080"


async def test_an_answer_that_already_says_ready_is_taken_at_once() -> None:
    answer = _task(7, ready=True, address="10.0.0.3:8080")
    assert await TaskCopies().wait_for("t", answer, _ready, _never_read, 30) is answer


async def test_the_request_delivered_before_the_wait_began_still_counts() -> None:
    copies = TaskCopies()
    copies.publish(_task(5))
    copies.publish(_task(6, ready=True, address="10.0.0.4:8080"))
    found = await copies.wait_for("t", _task(5), _ready, _never_read, 30)
    assert found is not None
    assert found["metadata"]["resourceVersion"] == "6"


async def test_a_watch_that_skipped_the_request_is_made_up_for_by_a_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cluster_sandbox, "RECHECK_SECONDS", 0.05)
    reads: list[int] = []

    async def read() -> Obj:
        reads.append(1)
        return _task(9, ready=True, address="10.0.0.5:8080")

    copies = TaskCopies()
    found = await copies.wait_for("t", _task(5), _ready, read, 30)
    assert found is not None
    assert reads


async def test_no_ready_sandbox_in_time_is_none() -> None:
    assert await TaskCopies().wait_for("t", _task(5), _ready, None, 0.05) is None
