"""Time to first token of a Task: from its creation to the harness's first model request, in the
local cluster with the operator, a running harness pod and the scripted model. Measured again
with sandbox pods that take 3 s longer to start (the kubelet's ``start_delay``, as a slow image
pull would): the harness asks for a sandbox only when the model first calls a tool, so the
first request should not wait for it."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cadre.localcluster.runner import threaded_apiserver

from bench.operator_bench import NS, REPO, admin, scripted_model, wait
from bench.results import Metric

RUNS = 9
SLOW_SANDBOX_SECONDS = 3.0
WRITE = {"name": "write", "input": {"path": "a.txt", "content": "a"}}
SCENARIO = {"agents": {"engineer": [{"text": "Writing.", "tool_uses": [WRITE]}, {"text": "Done."}]}}


def _first_tokens(folder: Path, start_delay: dict[str, float]) -> list[float]:
    """Seconds from each Task's creation to its first model request, RUNS Tasks in a row."""
    model, url = scripted_model(folder, SCENARIO)
    options: dict[str, Any] = {"start_delay": start_delay}
    try:
        with threaded_apiserver(
            crd_dir=REPO / "crds", kubelet_dir=folder / "node", kubelet_options=options
        ) as handle:
            server = handle.server
            assert server is not None
            kubeconfig, api = admin(server, folder)
            cadre = f"{server.url}/apis/cadre.dev/v1alpha1/namespaces/{NS}"
            env = {
                **os.environ, "KUBECONFIG": str(kubeconfig),
                "CADRE_HARNESS_IMAGE": "ghcr.io/cadre-dev/cadre:bench",
                "CADRE_SANDBOX_IMAGE": "ghcr.io/cadre-dev/sandbox:bench",
            }  # fmt: skip
            operator = subprocess.Popen(
                [sys.executable, "-m", "cadre.cli.main", "operator", "--namespace", NS],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                return _measure(api, server.url, cadre, url)
            finally:
                operator.terminate()
                operator.wait(timeout=30)
    finally:
        model.kill()
        model.wait(timeout=30)
        if model.stdout is not None:
            model.stdout.close()


def _measure(api: Any, server: str, cadre: str, model: str) -> list[float]:
    secret = {"metadata": {"name": "anthropic"}, "stringData": {"api-key": "sk"}}
    api.post(f"{server}/api/v1/namespaces/{NS}/secrets", json=secret)
    spec = {
        "role": "r",
        "model": "claude-sonnet-4-6",
        "baseURL": model,
        "apiKeySecretRef": {"name": "anthropic"},
    }
    agent = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Agent",
             "metadata": {"name": "engineer"}, "spec": spec}  # fmt: skip
    api.post(f"{cadre}/agents", json=agent)

    def agent_ready() -> bool:
        status = api.get(f"{cadre}/agents/engineer").json().get("status") or {}
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )

    wait(agent_ready)
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
