"""`cadre run` following a Task to its end, with the operator, a harness pod, a sandbox pod and
the scripted model in the local cluster: phase changes and the agent's transcript as they
happen, then the result; exit 0 when it succeeded and 1 when it failed."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from cadre.localcluster.runner import ThreadedApiServer

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Http
from tests.operator.conftest import agent_ready, cluster, create_agent, operator, scripted

__all__ = ["cluster", "operator", "scripted"]
WRITE = {"name": "write", "input": {"path": "hello.py", "content": "print('hello')\n"}}
STEPS = [{"text": "Writing it.", "tool_uses": [WRITE]}, {"text": "hello.py is written."}]


async def cadre_run(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cadre.cli.main", "run", f"--kubeconfig={kubeconfig}", *args,
        env={**os.environ, "NO_COLOR": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_run_follows_a_task_to_success_and_failure(
    cluster: tuple[ThreadedApiServer, Http, Path], operator: asyncio.subprocess.Process,
    scripted: ModelFactory,
) -> None:  # fmt: skip
    _, http, kubeconfig = cluster
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
