"""Which Task events start a session in the harness (``HarnessProcess._on_task`` and
``_work``), with the session itself replaced by a recorder: what is tested is only the dispatch
of events, so no model, sandbox or API server takes part (the full paths run against the local
cluster in test_harness_process.py and the demo, where the race below was first seen: a child
Task left InReview after its requester had accepted it)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any, cast

import pytest
from cadre.api.types import Obj
from cadre.harness.process import HarnessProcess
from cadre.harness.taskapi import TaskApi


def _child(version: int, **review: Any) -> Obj:
    return {
        "metadata": {"name": "child", "uid": "u1", "resourceVersion": str(version)},
        "spec": {"assignee": {"agent": "engineer"}, "prompt": "p", "parentRef": {"name": "p"}},
        "status": {"phase": "InReview", "agent": "engineer", "review": review},
    }


async def _harness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, during: dict[str, Obj]
) -> tuple[HarnessProcess, list[str]]:
    """A harness whose sessions only record the version they were started for; while the one
    for a version in ``during`` runs, that newer copy of the Task arrives as a watch event."""
    harness = HarnessProcess("engineer", cast(TaskApi, None), tmp_path, "key")
    harness.slots = asyncio.Semaphore(1)
    started: list[str] = []

    async def session(task: Obj) -> bool:
        version = task["metadata"]["resourceVersion"]
        started.append(version)
        newer = during.get(version)
        if newer is not None:
            await asyncio.sleep(0.01)
            harness._on_task("MODIFIED", newer)
        return False  # it only looked: nothing new to act on

    monkeypatch.setattr(harness, "_session", session)
    return harness, started


async def _settle(harness: HarnessProcess) -> None:
    while harness.running:
        await asyncio.gather(*harness.running.values())


async def test_a_verdict_that_arrives_during_a_look_is_taken_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Round 1's changes were asked for (still in status.review); the session looks at the
    # second delivery, finds nothing new, and the requester's acceptance arrives meanwhile.
    old = _child(5, decision="ChangesRequested", round=1, deliveries=2)
    accepted = copy.deepcopy(old)
    accepted["metadata"]["resourceVersion"] = "6"
    accepted["status"]["review"]["decision"] = "Accepted"
    harness, started = await _harness(tmp_path, monkeypatch, {"5": accepted})
    harness._on_task("MODIFIED", old)
    await _settle(harness)
    assert started == ["5", "6"]


async def test_a_look_at_an_unchanged_task_is_not_repeated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness, started = await _harness(tmp_path, monkeypatch, {})
    harness._on_task("MODIFIED", _child(5, decision="ChangesRequested", round=1, deliveries=2))
    await _settle(harness)
    assert started == ["5"]
