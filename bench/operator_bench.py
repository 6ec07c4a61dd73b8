"""What one Task costs the API server, all clients counted (operator and harness over HTTP):
a Task from creation to Succeeded and its sandbox removed, in the local cluster, with its
harness and sandbox as processes and the scripted model."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from cadre.api.names import MODEL_ENDPOINTS_ENV, MODEL_KEY_LABEL
from cadre.localcluster.node import network
from cadre.localcluster.runner import threaded_apiserver, write_kubeconfig

from bench.results import Metric

REPO = Path(__file__).resolve().parents[1]
NS = "default"
WRITES = ("create", "update", "patch", "delete", "deletecollection")
WRITE_TOOL = {"name": "write", "input": {"path": "a.txt", "content": "a"}}
SCENARIO = {
    "agents": {"engineer": [{"text": "Writing.", "tool_uses": [WRITE_TOOL]}, {"text": "Done."}]}
}


def admin(server: Any, folder: Path) -> tuple[Path, requests.Session]:
    """A kubeconfig for the operator, and an admin HTTPS session for the benchmark itself."""
    kubeconfig = folder / "kubeconfig"
    write_kubeconfig(kubeconfig, server.kubeconfig())
    (folder / "ca.crt").write_text(server.ca_pem)
    return kubeconfig, _admin_session(server, folder)


def _admin_session(server: Any, folder: Path) -> requests.Session:
    """An admin HTTPS session (one per thread: a requests.Session is not shared by threads),
    trusting the CA ``admin`` wrote into ``folder``."""
    api = requests.Session()
    api.trust_env = False  # else REQUESTS_CA_BUNDLE would replace our CA
    api.verify = str(folder / "ca.crt")
    api.headers["Authorization"] = f"Bearer {server.admin_token}"
    return api


def _counts(server: Any) -> tuple[float, float]:
    """Requests and writes so far, leaving out this benchmark's own (python-requests)."""
    counts = {k: v for k, v in server.request_counts().items() if k[4] != "python-requests"}
    writes = sum(v for (verb, *_), v in counts.items() if verb in WRITES)
    return sum(counts.values()), writes


def wait(check: Callable[[], bool], within: float = 120.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("the local cluster did not get there in time")
        time.sleep(every)


def scripted_model(
    folder: Path, scenario: dict[str, Any] = SCENARIO
) -> tuple[subprocess.Popen[str], str]:
    """The scripted model as a process of its own; stop it with ``kill``."""
    path = folder / "scenario.yaml"
    path.write_text(json.dumps(scenario))
    model = subprocess.Popen(
        [sys.executable, "-m", "cadre.scriptedmodel", "--scenario", str(path), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert model.stdout is not None
    line = model.stdout.readline()  # "listening on http://HOST:PORT"
    if not line.startswith("listening on "):
        model.kill()
        raise RuntimeError(f"the scripted model did not start: {line!r}")
    return model, line.removeprefix("listening on ").strip()


def for_pods(url: str) -> str:
    """A loopback ``url`` as the local cluster's pods reach it: at the node's address when
    each pod has a network of its own (as the tests' ``for_pods``)."""
    return network.as_seen_by_pods(url, network.NODE_IP if network.probe() is None else "127.0.0.1")


@contextlib.contextmanager
def operator_cluster(
    folder: Path, kubelet_options: dict[str, Any] | None = None
) -> Iterator[tuple[Any, requests.Session]]:
    """The local cluster (process kubelet) with a ``cadre operator`` process serving NS: the
    API server and an admin session for the benchmark; both stopped on exit."""
    with threaded_apiserver(
        crd_dir=REPO / "crds", kubelet_dir=folder / "node", kubelet_options=kubelet_options
    ) as handle:
        server = handle.server
        assert server is not None
        kubeconfig, api = admin(server, folder)
        env = {
            **os.environ, "KUBECONFIG": str(kubeconfig),
            "CADRE_HARNESS_IMAGE": "ghcr.io/cadre-dev/cadre:bench",
            "CADRE_SANDBOX_IMAGE": "ghcr.io/cadre-dev/sandbox:bench",
            # The scripted model, any port, at loopback or where pods reach it.
            MODEL_ENDPOINTS_ENV: f"http://127.0.0.1:*, http://{network.NODE_IP}:*",
        }  # fmt: skip
        operator = subprocess.Popen(
            [sys.executable, "-m", "cadre.cli.main", "operator", "--namespace", NS],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            yield server, api
        finally:
            operator.terminate()
            operator.wait(timeout=30)


def ready_agent(api: requests.Session, server: str, model: str) -> str:
    """The API-key Secret and an Agent ``engineer`` on the scripted model at ``model`` (a
    loopback URL; the Agent gets it as pods reach it), once its harness is Ready; the URL
    prefix of the namespace's Cadre objects."""
    cadre = f"{server}/apis/cadre.dev/v1alpha1/namespaces/{NS}"
    secret = {"metadata": {"name": "anthropic", "labels": {MODEL_KEY_LABEL: "true"}},
              "stringData": {"api-key": "sk"}}  # fmt: skip
    api.post(f"{server}/api/v1/namespaces/{NS}/secrets", json=secret)
    spec = {"role": "r", "model": "claude-sonnet-4-6", "baseURL": for_pods(model),
            "apiKeySecretRef": {"name": "anthropic"}}  # fmt: skip
    agent = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Agent",
             "metadata": {"name": "engineer"}, "spec": spec}  # fmt: skip
    api.post(f"{cadre}/agents", json=agent)

    def agent_ready() -> bool:
        status = api.get(f"{cadre}/agents/engineer").json().get("status") or {}
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )

    wait(agent_ready)
    return cadre


def _one_task(folder: Path) -> tuple[float, float, float]:
    model, url = scripted_model(folder)
    try:
        with operator_cluster(folder) as (server, api):
            cadre = ready_agent(api, server.url, url)
            time.sleep(3)  # the operator's and harness's start-up traffic settles first
            before = _counts(server)
            began = time.monotonic()
            spec = {"assignee": {"agent": "engineer"}, "prompt": "Write a.txt."}
            task = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Task",
                    "metadata": {"name": "bench"}, "spec": spec}  # fmt: skip
            api.post(f"{cadre}/tasks", json=task)

            def phase() -> str | None:
                return (api.get(f"{cadre}/tasks/bench").json().get("status") or {}).get("phase")

            wait(lambda: phase() in ("Succeeded", "Failed"))
            took = time.monotonic() - began
            if phase() != "Succeeded":
                raise RuntimeError(f"the Task ended {phase()}")
            sandbox = f"{server.url}/api/v1/namespaces/{NS}/pods/sbx-bench"
            wait(lambda: api.get(sandbox).status_code == 404)
            time.sleep(2)  # the clean-up's traffic
            after = _counts(server)
    finally:
        model.kill()
        model.wait(timeout=30)
        if model.stdout is not None:
            model.stdout.close()
    return after[0] - before[0], after[1] - before[1], took


def measure() -> list[Metric]:
    with tempfile.TemporaryDirectory() as folder:
        requests_total, writes, took = _one_task(Path(folder))
    how = (
        "one Task (two model calls, one tool call, the end-of-Task lesson) from creation to"
        " Succeeded and its sandbox removed, in the local cluster; operator and harness counted,"
        " the benchmark's own polling not; one run"
    )
    return [
        Metric("api_requests_per_task", requests_total, "requests", how),
        Metric(
            "api_writes_per_task",
            writes,
            "writes",
            f"creates, updates, patches, deletes; {how}; 1 or 2 of them (as the 2 s timer"
            " falls) are the Agent's activeTasks/queuedTasks, coalesced per Agent (they do not"
            " grow with the number of Tasks), and 1 the namespace's shared sandbox"
            " ServiceAccount, created with the first sandbox only",
            "<= 25",
        ),
        Metric(
            "local_task_seconds",
            round(took, 2),
            "s",
            f"creation to Succeeded; {how}; varies between about 0.8 and 3.7 s with where the"
            " sandbox's first readiness probe (every 2 s) falls",
        ),
    ]


TASKS = int(os.environ.get("CADRE_BENCH_TASKS", "1000"))
CREATORS = 8
"""Threads creating the Tasks and their sandbox requests."""


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _accepted(task: dict[str, Any]) -> bool:
    conditions = (task.get("status") or {}).get("conditions", [])
    return any(c["type"] == "Accepted" for c in conditions)


def _many_tasks(folder: Path) -> tuple[float, float, float]:
    """TASKS Tasks created at once; the benchmark plays their harnesses (asks for sandboxes);
    the kubelet simulates pods. Until every Task is accepted and its sandbox pod runs."""
    with threaded_apiserver(
        crd_dir=REPO / "crds", kubelet_dir=folder / "node", kubelet_options={"simulate": True}
    ) as handle:
        server = handle.server
        assert server is not None
        kubeconfig, api = admin(server, folder)
        cadre = f"{server.url}/apis/cadre.dev/v1alpha1/namespaces/{NS}"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        operator = subprocess.Popen(
            [sys.executable, "-m", "cadre.cli.main", "operator", "--namespace", NS],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            secret = {"metadata": {"name": "anthropic", "labels": {MODEL_KEY_LABEL: "true"}},
              "stringData": {"api-key": "sk"}}  # fmt: skip
            api.post(f"{server.url}/api/v1/namespaces/{NS}/secrets", json=secret)
            spec = {
                "role": "r",
                "model": "claude-sonnet-4-6",
                "apiKeySecretRef": {"name": "anthropic"},
            }
            agent = {
                "apiVersion": "cadre.dev/v1alpha1",
                "kind": "Agent",
                "metadata": {"name": "a"},
                "spec": spec,
            }
            api.post(f"{cadre}/agents", json=agent)
            time.sleep(3)  # the operator is up and idle
            digest = "0" * 64
            request = {
                "status": {"session": {"sandboxRequested": True, "sandboxTokenSHA256": digest}}
            }
            sessions = threading.local()

            def create(i: int) -> None:
                """Task i, then its sandbox request, as its harness would make it."""
                if not hasattr(sessions, "api"):
                    sessions.api = _admin_session(server, folder)
                task = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Task",
                        "metadata": {"name": f"t{i}"},
                        "spec": {"assignee": {"agent": "a"}, "prompt": "p"}}  # fmt: skip
                sessions.api.post(f"{cadre}/tasks", json=task).raise_for_status()
                sessions.api.patch(
                    f"{cadre}/tasks/t{i}/status",
                    json=request,
                    headers={"Content-Type": "application/merge-patch+json"},
                ).raise_for_status()

            began = time.monotonic()
            # "At once": several clients, as kubectl apply -f of a folder and harnesses would.
            with ThreadPoolExecutor(CREATORS) as pool:
                list(pool.map(create, range(TASKS)))
            created = time.monotonic() - began

            all_accepted = False

            def done() -> bool:
                # Each look lists 1,000 objects in the API server's own process (and GIL): the
                # Tasks only until all are accepted, then the pods only, every 2 s.
                nonlocal all_accepted
                if not all_accepted:
                    tasks = api.get(f"{cadre}/tasks").json()["items"]
                    all_accepted = sum(1 for t in tasks if _accepted(t)) == TASKS
                    if not all_accepted:
                        return False
                pods = api.get(
                    f"{server.url}/api/v1/namespaces/{NS}/pods?labelSelector=app.kubernetes.io/component%3Dsandbox"
                ).json()["items"]
                running = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running")
                return running == TASKS

            wait(done, within=900, every=2.0)
            took = time.monotonic() - began
            rss = _rss_mb(operator.pid)
        finally:
            operator.terminate()
            operator.wait(timeout=60)
    return TASKS / took, rss, created


SCALE_RUNS = int(os.environ.get("CADRE_BENCH_SCALE_RUNS", "3"))


def measure_scale() -> list[Metric]:
    runs = []
    for _ in range(SCALE_RUNS):  # each on a fresh cluster and operator: the machine is noisy
        with tempfile.TemporaryDirectory() as folder:
            runs.append(_many_tasks(Path(folder)))
    rates = sorted(rate for rate, _, _ in runs)
    rate = statistics.median(rates)
    sizes = sorted(rss for _, rss, _ in runs)
    creating = statistics.median(created for _, _, created in runs)
    how = (
        f"{TASKS} Tasks created at once by {CREATORS} clients (the benchmark asks for each"
        " sandbox, as a harness would); until every one is Accepted and its sandbox pod"
        f" Running (kubelet in simulate mode; looked at every 2 s); {SCALE_RUNS} runs in one"
        " session, each with a fresh cluster and operator"
    )
    return [
        Metric(
            "tasks_per_second",
            round(rate, 2),
            "tasks/s",
            f"median of: {how}; all runs {', '.join(f'{r:.1f}' for r in rates)}; creating"
            f" them took {creating:.1f} s (median) of the {TASKS / rate:.1f} s",
            ">= 20",
        ),
        Metric(
            f"operator_rss_mb_{TASKS}_tasks",
            round(sizes[-1], 1),
            "MB",
            f"largest RSS of the operator after: {how}; all runs"
            f" {', '.join(f'{m:.0f}' for m in sizes)} MB",
            "<= 250",
        ),
    ]
