"""Install figures: how long Helm takes to a working operator, and what re-applying the same
manifests writes. Each run on a fresh ``cadre dev up --no-operator``."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import helm_python as helm
import requests
import yaml

from bench.results import Metric

REPO = Path(__file__).resolve().parent.parent
RUNS = 3


@contextmanager
def _cluster() -> Iterator[tuple[Path, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        state = Path(folder) / "dev"
        proc = subprocess.Popen(
            [sys.executable, "-m", "cadre.cli.main", "dev", "up", "--port", "0", "--state-dir",
             str(state), "--crds", str(REPO / "crds"), "--no-operator"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=folder,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("ready"), line
            config = yaml.safe_load((state / "kubeconfig").read_text())
            cluster = config["clusters"][0]["cluster"]
            ca = state / "ca.crt"
            ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
            token = config["users"][0]["user"]["token"]

            def get(path: str) -> Any:
                headers = {"Authorization": f"Bearer {token}"}
                url = cluster["server"] + path
                return requests.get(url, verify=str(ca), timeout=30, headers=headers).json()

            yield state / "kubeconfig", get
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


def _kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    binary = shutil.which("kubectl")
    assert binary is not None, "kubectl is needed"
    done = subprocess.run([binary, f"--kubeconfig={kubeconfig}", *args], input=input,
                          capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    return done.stdout


AGENT = """
apiVersion: v1
kind: Secret
metadata: {name: model, namespace: default, labels: {cadre.dev/model-api-key: "true"}}
stringData: {api-key: sk-bench}
---
apiVersion: cadre.dev/v1alpha1
kind: Agent
metadata: {name: bench, namespace: default}
spec: {role: Benchmarks, model: claude-sonnet-4-6, baseURL: "http://127.0.0.1:9",
       apiKeySecretRef: {name: model}, tools: []}
"""


def _install_once() -> float:
    with _cluster() as (kubeconfig, get):
        _kubectl(kubeconfig, "apply", "-f", "-", input=AGENT)
        config = helm.Config(kubeconfig_path=kubeconfig, namespace="cadre-system")
        began = time.perf_counter()
        config.install(str(REPO / "charts" / "cadre"), "cadre",
                       {"modelEndpoints": ["http://127.0.0.1:*"]}, namespace="cadre-system",
                       create_namespace=True, timeout=120)  # fmt: skip
        path = "/apis/cadre.dev/v1alpha1/namespaces/default/agents/bench"
        while time.perf_counter() - began < 120:
            conditions = (get(path).get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                took = time.perf_counter() - began
                config.close()
                return took
            time.sleep(0.05)
        raise AssertionError("the Agent never became Ready")


def _reapply_writes() -> tuple[int, int]:
    manifests = str(REPO / "manifests" / "cadre.yaml")
    with _cluster() as (kubeconfig, _):
        _kubectl(kubeconfig, "apply", "--server-side", "-f", manifests)
        _kubectl(kubeconfig, "rollout", "status", "deployment/cadre", "-n", "cadre-system",
                 "--timeout=90s")  # fmt: skip

        def versions() -> dict[str, str]:
            items = json.loads(_kubectl(kubeconfig, "get", "-f", manifests, "-o", "json"))["items"]
            return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"]
                    for i in items}  # fmt: skip

        before = versions()
        _kubectl(kubeconfig, "apply", "--server-side", "-f", manifests)
        after = versions()
    return sum(1 for key in before if after.get(key) != before[key]), len(before)


def measure() -> list[Metric]:
    times = [_install_once() for _ in range(RUNS)]
    writes, objects = _reapply_writes()
    return [
        Metric("helm_install_ready_seconds", round(statistics.median(times), 3), "s",
               "Helm 4 install of charts/cadre (helm-python-sdk) into a fresh cadre dev up "
               "--no-operator until an Agent created beforehand is Ready (the operator's "
               "Deployment rolled out, its harness pod Ready: most of it is the harness's "
               "readiness probe, every 5 s); median of "
               f"{RUNS} runs in one session: " + ", ".join(f"{t:.2f}" for t in times)),
        Metric("ssa_reapply_writes", writes, "objects",
               f"objects written when `kubectl apply --server-side -f manifests/cadre.yaml` "
               f"runs again after a settled install ({objects} objects); one run", "0"),
    ]  # fmt: skip


if __name__ == "__main__":
    for metric in measure():
        print(metric.name, metric.value, metric.note)
