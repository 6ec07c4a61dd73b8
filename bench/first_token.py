"""Time to first token of a Task: from its creation to the harness's first model request, in the
local cluster with the operator, a running harness pod and the scripted model. Measured again
with sandbox pods that take 3 s longer to start (the kubelet's ``start_delay``, as a slow image
pull would): the harness asks for a sandbox only when the model first calls a tool, so the
first request should not wait for it."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.operator_bench import NS, operator_cluster, ready_agent, scripted_model, wait
from bench.results import Metric

RUNS = 9
SLOW_SANDBOX_SECONDS = 3.0
WRITE = {"name": "write", "input": {"path": "a.txt", "content": "a"}}
SCENARIO = {"agents": {"engineer": [{"text": "Writing.", "tool_uses": [WRITE]}, {"text": "Done."}]}}


def _first_tokens(folder: Path, start_delay: dict[str, float]) -> list[float]:
    """Seconds from each Task's creation to its first model request, RUNS Tasks in a row."""
    model, url = scripted_model(folder, SCENARIO)
    try:
        with operator_cluster(folder, {"start_delay": start_delay}) as (server, api):
            cadre = f"{server.url}/apis/cadre.dev/v1alpha1/namespaces/{NS}"
            return _measure(api, server.url, cadre, url)
    finally:
        model.kill()
        model.wait(timeout=30)
        if model.stdout is not None:
            model.stdout.close()


def _measure(api: Any, server: str, cadre: str, model: str) -> list[float]:
    ready_agent(api, server, model)
    time.sleep(2)  # the operator's and harness's start-up work settles first
    seconds = []
    for run in range(RUNS):
        prompt = f"First token, run {run}."
        task = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Task",
                "metadata": {"name": f"ttft-{run}"},
                "spec": {"assignee": {"agent": "engineer"}, "prompt": prompt}}  # fmt: skip
        created = time.time()
        api.post(f"{cadre}/tasks", json=task)

        def first(prompt: str = prompt) -> float | None:
            arrivals = api.get(f"{model}/_scripted/arrivals").json()
            return next((a["time"] for a in arrivals if a["prompt"] == prompt), None)

        wait(lambda: first() is not None, every=0.01)
        arrived = first()
        assert arrived is not None
        seconds.append(arrived - created)

        def ended(name: str = f"ttft-{run}") -> bool:
            status = api.get(f"{cadre}/tasks/{name}").json().get("status") or {}
            return status.get("phase") in ("Succeeded", "Failed")

        wait(ended)
        time.sleep(1.0)  # one Task at a time, after the last one's clean-up: an idle system
    return seconds


def measure() -> list[Metric]:
    with tempfile.TemporaryDirectory() as folder:
        normal = _first_tokens(Path(folder), {})
    slow_delay = {"ghcr.io/cadre-dev/sandbox": SLOW_SANDBOX_SECONDS}
    with tempfile.TemporaryDirectory() as folder:
        slow = _first_tokens(Path(folder), slow_delay)
    p50, slow_p50 = statistics.median(normal), statistics.median(slow)
    how = (
        f"Task created (the benchmark's POST) to the scripted model receiving the harness's"
        f" first request, the harness pod already running; median of {RUNS} Tasks in a row,"
        " one run"
    )
    return [
        Metric("task_ttft_seconds_p50", round(p50, 3), "s", how, "<= 0.5"),
        Metric(
            "task_ttft_slow_sandbox_ratio", round(slow_p50 / p50, 2), "ratio",
            f"the same with sandbox pods starting {SLOW_SANDBOX_SECONDS:g} s later (the"
            f" kubelet's start_delay), over the normal figure: {slow_p50:.3f} s /"
            f" {p50:.3f} s; medians of {RUNS} Tasks each, one run",
            "<= 1.2",
        ),
    ]  # fmt: skip


if __name__ == "__main__":
    for metric in measure():
        print(metric)
