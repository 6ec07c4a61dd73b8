"""``sandbox_tool_overhead_ratio``: ``bash -c true`` through the sandbox server against
``subprocess.run`` of the same command directly, median per call, interleaved in rounds so
machine noise hits both alike. Measured twice: the sandbox pod exactly as the operator builds
it, in the local cluster, called at its pod address (through the pod network, its own root,
namespaces and cgroups, as isolation allows on this machine), and the sandbox server as a
plain process on loopback (``..._process``), which isolates the server's own cost."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from bench.results import Metric

REPO = Path(__file__).resolve().parent.parent
ROUNDS = 20
CALLS_PER_ROUND = 20
TOKEN = "bench-token"  # noqa: S105 - a throwaway token for a loopback server


def _start_server(workspace: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO / "operator"),
        "CADRE_WORKSPACE": str(workspace),
        "CADRE_SANDBOX_HOST": "127.0.0.1",
        "CADRE_SANDBOX_PORT": "0",
        "CADRE_SANDBOX_TOKEN_SHA256": hashlib.sha256(TOKEN.encode()).hexdigest(),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-S", "-m", "cadre.sandbox"], env=env, stderr=out)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if record.get("msg") == "serving":
                return proc, int(record["port"])
        time.sleep(0.01)
    proc.kill()
    raise RuntimeError(f"sandbox did not start: {log.read_text()}")


def _interleaved(host: str, port: int) -> tuple[list[float], list[float]]:
    """Per-call seconds through the sandbox at ``host:port`` and of bash run directly."""
    conn = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    through: list[float] = []
    direct: list[float] = []
    n = 0
    for _ in range(ROUNDS):
        for _ in range(CALLS_PER_ROUND):
            n += 1
            body = json.dumps(
                {"tool_use_id": f"b{n}", "name": "bash", "input": {"command": "true"}}
            )
            started = time.perf_counter()
            conn.request("POST", "/v1/tool-calls", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            through.append(time.perf_counter() - started)
            assert response.status == 200
        for _ in range(CALLS_PER_ROUND):
            started = time.perf_counter()
            subprocess.run(["bash", "-c", "true"], check=True)
            direct.append(time.perf_counter() - started)
    conn.close()
    return through, direct


def _through_a_process() -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "workspace"
        workspace.mkdir()
        proc, port = _start_server(workspace, Path(tmp) / "sandbox.log")
        try:
            return _interleaved("127.0.0.1", port)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _through_a_pod() -> tuple[tuple[list[float], list[float]], str]:
    """The operator's sandbox objects in the local cluster, called at the pod's address."""
    from cadre.api.agent import Sandbox
    from cadre.localcluster.runner import threaded_apiserver
    from cadre.operator.sandbox_builders import (
        SandboxDefaults,
        SandboxTarget,
        build_sandbox_objects,
        build_sandbox_service_account,
    )

    with tempfile.TemporaryDirectory() as tmp, threaded_apiserver(
        crd_dir=REPO / "crds", kubelet_dir=Path(tmp) / "node"
    ) as handle:  # fmt: skip
        kubelet, server = handle.kubelet, handle.server
        assert kubelet is not None
        assert server is not None
        # The sandbox's objects are owned by their Task (without it they are collected).
        task = handle.call(_create, server, {
            "apiVersion": "cadre.dev/v1alpha1", "kind": "Task", "metadata": {"name": "bench"},
            "spec": {"assignee": {"agent": "bench"}, "prompt": "Benchmark."},
        })  # fmt: skip
        target = SandboxTarget(
            namespace="default", task="bench", task_uid=task["metadata"]["uid"], agent="bench",
            spec=Sandbox(),
            token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest(),
        )  # fmt: skip
        defaults = SandboxDefaults(image="ghcr.io/cadre-dev/sandbox:bench")
        objects = [build_sandbox_service_account("default"),
                   *build_sandbox_objects(target, defaults)]  # fmt: skip
        for obj in objects:
            handle.call(_create, server, obj)
        deadline = time.monotonic() + 60
        while True:
            pod = handle.call(server.store.get, ("", "pods"), "default", "sbx-bench") or {}
            status = pod.get("status", {})
            if any(c["type"] == "Ready" and c["status"] == "True"
                   for c in status.get("conditions", [])):  # fmt: skip
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox pod did not become Ready: {status}")
            time.sleep(0.05)
        isolation = ", ".join(
            what for what, on in (("its own root", kubelet.rootfs),
                                  ("its own network namespace, policies enforced",
                                   kubelet.network is not None),
                                  ("cgroups", kubelet.cgroups is not None)) if on
        ) or "no isolation"  # fmt: skip
        return _interleaved(status["podIP"], 8080), isolation


def _create(server: Any, obj: dict[str, Any]) -> dict[str, Any]:
    rtype = server.registry.lookup(*_group_version(obj["apiVersion"]), _plural(obj["kind"]))
    created: dict[str, Any] = server.cluster.create(rtype, "default", obj).obj
    return created


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def _plural(kind: str) -> str:
    return {"NetworkPolicy": "networkpolicies"}.get(kind, kind.lower() + "s")


def measure() -> list[Metric]:
    (pod_through, pod_direct), isolation = _through_a_pod()
    through, direct = _through_a_process()
    calls = ROUNDS * CALLS_PER_ROUND
    how = f"median of {calls} calls each way, interleaved in {ROUNDS} rounds, one run"
    return [
        Metric(
            "sandbox_tool_overhead_ratio",
            round(median(pod_through) / median(pod_direct), 3),
            "ratio",
            "bash -c true through the operator's sandbox pod in the local cluster, called at "
            f"its pod address ({isolation}; keep-alive HTTP, journal and result written) / "
            f"subprocess.run of the same command on the host; {how}",
            "<= 1.5",
        ),
        Metric(
            "sandbox_tool_call_ms_p50",
            round(median(pod_through) * 1000, 3),
            "ms",
            f"one bash -c true tool call through the sandbox pod ({isolation}); {how}",
        ),
        Metric(
            "sandbox_tool_overhead_ratio_process",
            round(median(through) / median(direct), 3),
            "ratio",
            "bash -c true through the sandbox server as a plain process over loopback HTTP / "
            f"subprocess.run of the same command; {how}",
        ),
        Metric(
            "direct_bash_true_ms_p50",
            round(median(direct) * 1000, 3),
            "ms",
            f"subprocess.run(['bash', '-c', 'true']) in the benchmark process; {how}",
        ),
    ]
