"""Processes killed with SIGKILL while a Task is in flight, in the local cluster: the harness at
a random moment (it resumes from its session log and the Task ends exactly as an uninterrupted
twin does), and the sandbox between two tool calls (the kubelet restarts it in the same pod, the
workspace is intact, the Task finishes). The operator's kill is in
tests/operator/test_operator_in_the_local_cluster.py (20 Tasks, three kills)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from typing import Any

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Served
from tests.operator.conftest import NS, agent_ready, create_agent, create_task, ended
from tests.system.conftest import claim_dir, pid_of

STEPS: list[dict[str, Any]] = [
    {
        "text": f"Step {n}.",
        "delay_seconds": 0.4,
        "tool_uses": [{"name": "bash", "input": {"command": f"echo {n} >> log.txt; cat log.txt"}}],
    }
    for n in range(1, 6)
]
STEPS.append(
    {
        "choices": [
            {"when_last_result_contains": "1\n2\n3\n4\n5\n", "text": "All five steps ran once."},
            {"text": "Something ran twice or not at all."},
        ]
    }
)
RETAIN = {"sandbox": {"workspace": {"retention": "Retain"}}}


def conversation(requests: list[dict[str, Any]], agent: str) -> list[str]:
    """The tool results of an agent's last request: what its session finally saw."""
    last = [r for r in requests if f"You are {agent}," in json.dumps(r["system"])][-1]
    return [
        json.dumps(block.get("content"))
        for message in last["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == "tool_result"
    ]


async def test_the_harness_killed_at_a_random_moment_ends_as_an_uninterrupted_run(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory,
) -> None:  # fmt: skip
    handle, http = cluster.handle, cluster.http
    seed = int(os.environ.get("CADRE_CHAOS_SEED", random.randrange(1 << 30)))
    moment = random.Random(seed).uniform(0.0, 2.0)
    where = f"seed {seed}: killed {moment:.2f}s after the first model request"
    url, model = await scripted({"agents": {"calm": STEPS, "engineer": STEPS}})
    for name in ("calm", "engineer"):
        create_agent(http, url, name, **RETAIN)
    for name in ("calm", "engineer"):
        await until(lambda name=name: agent_ready(http, name), within=60)
    create_task(http, "twin", "Do the five steps.", agent="calm")
    create_task(http, "steps", "Do the five steps.", agent="engineer")

    await until(lambda: any("You are engineer," in json.dumps(r["system"]) for r in model.requests))
    await asyncio.sleep(moment)
    assert not ended(http, "steps"), f"{where}: the Task ended before the kill"
    pid = pid_of(handle, "harness-engineer-0")
    assert pid is not None, where
    os.kill(pid, signal.SIGKILL)

    killed = await until(lambda: ended(http, "steps"), within=90)
    calm = await until(lambda: ended(http, "twin"), within=90)
    assert killed["status"]["phase"] == calm["status"]["phase"] == "Succeeded", where
    assert killed["status"]["result"] == calm["status"]["result"], where
    assert calm["status"]["result"]["summary"] == "All five steps ran once."
    assert killed["status"]["session"]["resumes"] >= 1, where
    assert conversation(model.requests, "engineer") == conversation(model.requests, "calm"), where
    files = [
        (claim_dir(handle, NS, f"sbx-{task}-workspace") / "log.txt").read_text()
        for task in ("steps", "twin")
    ]
    assert files == ["1\n2\n3\n4\n5\n"] * 2, where
    pod = http("GET", f"/api/v1/namespaces/{NS}/pods/harness-engineer-0").json()
    assert pod["status"]["containerStatuses"][0]["restartCount"] >= 1, where


NOTES: list[dict[str, Any]] = [
    {
        "text": "Taking notes.",
        "tool_uses": [{"name": "write", "input": {"path": "notes.txt", "content": "remember me"}}],
    },
    {
        "text": "Reading them back.",
        "delay_seconds": 2,  # the sandbox process is killed while the model thinks
        "tool_uses": [{"name": "bash", "input": {"command": "cat notes.txt"}}],
    },
    {
        "choices": [
            {"when_last_result_contains": "remember me", "text": "The notes survived."},
            {"text": "The notes are gone."},
        ]
    },
]


async def test_the_sandbox_process_killed_mid_task_restarts_with_its_workspace(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory,
) -> None:  # fmt: skip
    handle, http = cluster.handle, cluster.http
    url, model = await scripted({"agents": {"engineer": NOTES}})
    create_agent(http, url)
    create_task(http, "notes", "Take notes, then read them.")
    await until(lambda: len(model.requests) >= 2)  # notes written; the model is thinking
    before = http("GET", f"/api/v1/namespaces/{NS}/pods/sbx-notes").json()["metadata"]["uid"]
    pid = await until(lambda: pid_of(handle, "sbx-notes"))
    os.kill(pid, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        pod: dict[str, Any] = http("GET", f"/api/v1/namespaces/{NS}/pods/sbx-notes").json()
        statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
        return pod if statuses[0].get("restartCount", 0) >= 1 else None

    pod = await until(restarted, within=30)
    assert pod["metadata"]["uid"] == before  # the same pod ran its container again

    done = await until(lambda: ended(http, "notes"), within=90)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["result"]["summary"] == "The notes survived."
