"""`cadre run` and `cadre logs` with the operator, harness pods, sandbox pods and the scripted
model in the local cluster. `run` follows a Task to its end (phase changes and the agent's
transcript as they happen, then the result; exit 0 when it succeeded, 1 when it failed).
`logs` replays a session's durable log through the API server's pod proxy to the harness, and
with -f follows it live from the start to the end with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Served
from tests.operator.conftest import agent_ready, cluster, create_agent, operator, scripted

__all__ = ["cluster", "operator", "scripted"]
WRITE = {"name": "write", "input": {"path": "hello.py", "content": "print('hello')\n"}}
RUN = {"name": "bash", "input": {"command": "python3 hello.py"}}
STEPS = [
    {"choices": [
        {"when_prompt_contains": "Write hello.py", "text": "Writing it.", "tool_uses": [WRITE]},
        {"when_prompt_contains": "Slowly", "text": "Writing, slowly.", "tool_uses": [WRITE],
         "delay_seconds": 1},
    ]},
    {"text": "Running it.", "tool_uses": [RUN], "delay_seconds": 0.5},
    {"text": "hello.py is written."},
]  # fmt: skip


async def cadre_run(kubeconfig: Path, *args: str, command: str = "run") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cadre.cli.main", command, f"--kubeconfig={kubeconfig}", *args,
        env={**os.environ, "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_run_follows_a_task_to_success_and_failure(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory,
) -> None:  # fmt: skip
    http, kubeconfig = cluster.http, cluster.kubeconfig
    url, _ = await scripted({"agents": {"engineer": STEPS}})
    create_agent(http, url)
    create_agent(http, url, "stranger")  # the scenario has no script for it: the model refuses
    for name in ("engineer", "stranger"):
        await until(lambda name=name: agent_ready(http, name), within=60)

    code, out, err = await cadre_run(kubeconfig, "--agent", "engineer", "--name", "hello",
                                     "Write hello.py.")  # fmt: skip
    assert code == 0, (out, err)
    assert out.startswith("task/hello created\n")
    assert "▸ Task hello (engineer)" in out
    assert "engineer -> write" in out  # the transcript, from the harness pod's log
    assert "Running → Succeeded" in out
    assert out.rstrip().endswith("Task hello Succeeded (Completed)\nhello.py is written.")

    code, out, err = await cadre_run(kubeconfig, "--agent", "stranger", "Anything.")
    assert code == 1, (out, err)
    assert out.startswith("task/run-")
    assert "Task run-" in out
    assert " Failed (" in out


async def test_logs_replays_a_session_and_follows_one_live(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory,
) -> None:  # fmt: skip
    http, kubeconfig = cluster.http, cluster.kubeconfig
    url, _ = await scripted({"agents": {"engineer": STEPS}})
    create_agent(http, url)
    await until(lambda: agent_ready(http, "engineer"), within=60)
    code, _, err = await cadre_run(kubeconfig, "--agent", "engineer", "--name", "slow",
                                     "--no-follow", "Slowly write hello.py.")  # fmt: skip
    assert code == 0, err
    # Follow from the very start, while the session runs: it ends when the session does.
    code, followed, err = await cadre_run(kubeconfig, "slow", "-f", "-o", "jsonl", command="logs")
    assert code == 0, err
    events = [json.loads(line) for line in followed.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # no gap, no duplicate
    assert events[0]["type"] == "session.created"
    assert [e["type"] for e in events[-2:]] == ["session.status_terminated", "session.lesson"]
    assert events[-2]["outcome"] == "Succeeded"
    # Replayed afterwards: the same events; from a seq: the rest.
    code, replayed, err = await cadre_run(kubeconfig, "slow", "-o", "jsonl", command="logs")
    assert [json.loads(line) for line in replayed.splitlines()] == events
    code, rest, err = await cadre_run(kubeconfig, "slow", "--after", "3", "-o", "jsonl",
                                      command="logs")  # fmt: skip
    assert [json.loads(line)["seq"] for line in rest.splitlines()] == [e["seq"] for e in events[3:]]
    # Readable by default.
    code, text, err = await cadre_run(kubeconfig, "slow", command="logs")
    assert "user: Slowly write hello.py." in text
    assert "-> write" in text
    assert "<- " in text
    assert "hello" in text
    assert "Succeeded: " in text
    assert "lesson: Finished 'Slowly write hello.py.'" in text
    # A Task this harness never worked: said in one line.
    http("POST", "/apis/cadre.dev/v1alpha1/namespaces/default/tasks", {
        "apiVersion": "cadre.dev/v1alpha1", "kind": "Task", "metadata": {"name": "elsewhere"},
        "spec": {"assignee": {"agent": "nobody"}, "prompt": "p"}})  # fmt: skip
    code, _, err = await cadre_run(kubeconfig, "elsewhere", command="logs")
    assert code == 1
    assert "Error: the harness of Agent nobody has no events for Task elsewhere" in err


async def test_run_fails_within_seconds_naming_a_pod_that_cannot_start(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory
) -> None:
    """Before, a sandbox (or harness) pod that could never start left `cadre run` printing
    Pending until its timeout; now it fails naming the pod, the reason and its log."""
    http, kubeconfig = cluster.http, cluster.kubeconfig
    url, _ = await scripted({"agents": {"engineer": STEPS}})
    create_agent(http, url, sandbox={"image": "ghcr.io/cadre-dev/no-such-image:1"})
    await until(lambda: agent_ready(http, "engineer"), within=60)
    # cadre_run gives up after 120 s: only failing fast passes (the follow timeout is 300 s).
    code, out, err = await cadre_run(kubeconfig, "--agent", "engineer", "--name", "stuck",
                                     "--timeout", "300", "Write hello.py.")  # fmt: skip
    assert code == 1, (out, err)
    assert "pod sbx-stuck is failing (ErrImagePull" in err, err
    assert "no-such-image" in err
