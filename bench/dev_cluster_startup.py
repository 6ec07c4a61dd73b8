"""How long ``cadre dev up`` takes to print ``ready`` (the issue's target: under 2 s), and how
long a pod of Cadre's image takes from create to Ready in it."""

from __future__ import annotations

import base64
import json
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from bench.results import Metric

REPO = Path(__file__).resolve().parents[1]
RUNS = 5


def _start(state: Path) -> tuple[subprocess.Popen[str], float]:
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cadre.cli.main", "dev", "up", "--port", "0", "--no-operator",
         "--state-dir", str(state), "--crds", str(REPO / "crds")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready"):
        raise RuntimeError(f"cadre dev up did not start: {line!r}")
    return proc, time.monotonic() - began


def _pod_ready_seconds(state: Path) -> float:
    config = yaml.safe_load((state / "kubeconfig").read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    ca = state / "bench-ca.crt"
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    context = ssl.create_default_context(cafile=str(ca))
    headers = {"Authorization": f"Bearer {user['token']}", "Content-Type": "application/json"}
    pod = {
        "metadata": {"name": "bench"},
        "spec": {"containers": [{"name": "main", "image": "ghcr.io/cadre-dev/cadre:bench",
                                 "command": ["python3", "-c", "import time; time.sleep(60)"]}]},
    }  # fmt: skip
    base = cluster["server"] + "/api/v1/namespaces/default/pods"
    began = time.monotonic()
    request = urllib.request.Request(base, json.dumps(pod).encode(), headers)  # noqa: S310 - https to our own server
    urllib.request.urlopen(request, context=context).close()  # noqa: S310 - our own server
    while time.monotonic() - began < 30:
        get = urllib.request.Request(base + "/bench", headers=headers)  # noqa: S310
        with urllib.request.urlopen(get, context=context) as response:  # noqa: S310
            status = json.loads(response.read()).get("status", {})
        if any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        ):
            return time.monotonic() - began
        time.sleep(0.005)
    raise RuntimeError("the pod did not become Ready in 30 s")


def measure() -> list[Metric]:
    ready: list[float] = []
    pods: list[float] = []
    for _ in range(RUNS):
        with tempfile.TemporaryDirectory() as folder:
            proc, seconds = _start(Path(folder) / "dev")
            try:
                ready.append(seconds)
                pods.append(_pod_ready_seconds(Path(folder) / "dev"))
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
                if proc.stdout is not None:
                    proc.stdout.close()
    how = f"median of {RUNS} fresh starts in one run"
    return [
        Metric(
            "dev_cluster_ready_seconds", round(statistics.median(ready), 3), "s",
            f"spawn of `cadre dev up` (CRDs registered) until it prints ready; {how}", "< 2",
        ),
        Metric(
            "local_pod_ready_seconds", round(statistics.median(pods), 3), "s",
            f"create of a pod of Cadre's image (no probe) until its Ready condition; {how}",
        ),
    ]  # fmt: skip
