"""``cadre dev up`` as a user runs it: prints ``ready``, runs the operator and pods, and on
SIGTERM stops and leaves no process behind. Also its simulate mode (pods Running without
processes)."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cadre.localcluster.runner import ThreadedApiServer, threaded_apiserver

from tests.localcluster.conftest import REPO, Http
from tests.localcluster.node.conftest import alive, descendants, eventually, pod_status, python_pod


def test_dev_up_prints_ready_and_leaves_nothing_behind(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cadre.cli.main", "dev", "up", "--port", "0",
         "--state-dir", str(tmp_path / "dev"), "--crds", str(REPO / "crds")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready"), line
    assert "operator pid" in line
    config = yaml.safe_load((tmp_path / "dev" / "kubeconfig").read_text())
    server = config["clusters"][0]["cluster"]["server"]
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(config["clusters"][0]["cluster"]["certificate-authority-data"]))
    http = Http(server, ca, config["users"][0]["user"]["token"])
    script = "import time\nprint('up', flush=True)\ntime.sleep(600)"
    assert (
        http("POST", "/api/v1/namespaces/default/pods", python_pod("sleeper", script)).status_code
        == 201
    )
    eventually(lambda: pod_status(http, "default", "sleeper").get("phase") == "Running")
    children = descendants(proc.pid)
    assert children, "the pod's process runs under dev up"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert "stopped" in proc.stdout.read()
    proc.stdout.close()
    assert not [pid for pid in children if alive(pid)]


@pytest.fixture
def simulated(tmp_path: Path) -> Iterator[ThreadedApiServer]:
    with threaded_apiserver(
        kubelet_dir=tmp_path / "node", kubelet_options={"simulate": True}
    ) as handle:
        yield handle


def test_simulate_mode_marks_pods_running_without_processes(
    simulated: ThreadedApiServer, tmp_path: Path
) -> None:
    server = simulated.server
    assert server is not None
    (tmp_path / "ca").write_text(server.ca_pem)
    http = Http(server.url, tmp_path / "ca", server.admin_token)
    pod = python_pod("ghost", "raise SystemExit(1)")
    pod["spec"]["containers"][0]["image"] = "nginx:1.27"  # any image: nothing runs
    http("POST", "/api/v1/namespaces/default/pods", pod)
    status = eventually(
        lambda: (s := pod_status(http, "default", "ghost")).get("phase") == "Running" and s
    )
    assert status["containerStatuses"][0]["ready"] is True
    assert not list((tmp_path / "node" / "pods").glob("*/logs/*.log"))
    started = time.monotonic()
    http("DELETE", "/api/v1/namespaces/default/pods/ghost")
    eventually(lambda: http("GET", "/api/v1/namespaces/default/pods/ghost").status_code == 404)
    assert time.monotonic() - started < 5


def test_dev_up_with_metrics_and_traces_serves_them_locally(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cadre.cli.main", "dev", "up", "--port", "0", "--metrics",
         "--traces", "--state-dir", str(tmp_path / "dev"), "--crds", str(REPO / "crds")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready")
        said = proc.stdout.readline()
        match = re.search(r"operator (http://127\.0\.0\.1:\d+/metrics)", said)
        assert match, said
        targets = tmp_path / "dev" / "prometheus-targets.json"
        eventually(targets.exists)
        groups = json.loads(targets.read_text())
        assert groups[0]["labels"]["job"] == "cadre-operator"
        assert match[1] == f"http://{groups[0]['targets'][0]}/metrics"
        # The operator's metrics come up once it has started (kopf's startup handlers).
        served = eventually(lambda: _get(match[1]), timeout=60)
        assert 'cadre_build_info{component="operator"' in served
        # --traces: the in-memory OTLP receiver the operator hands to every harness.
        said_traces = proc.stdout.readline()
        traces = re.search(r"read them at (http://127\.0\.0\.1:\d+/v1/spans)", said_traces)
        assert traces, "no traces line"
        assert json.loads(_get(traces[1]) or "null") == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        if proc.stdout is not None:
            proc.stdout.close()


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:  # noqa: S310 - loopback http
            return str(answer.read().decode())
    except OSError:
        return None


def test_scrape_targets_are_the_running_harness_pods() -> None:
    from cadre.localcluster.scrape import file_sd

    def pod(name: str, phase: str, ip: str | None) -> dict[str, Any]:
        return {"metadata": {"namespace": "default", "name": name,
                             "labels": {"cadre.dev/agent": name.removeprefix("harness-")[:-2]}},
                "status": {"phase": phase, **({"podIP": ip} if ip else {})}}  # fmt: skip

    groups = file_sd([pod("harness-b-0", "Running", "127.1.0.3"),
                      pod("harness-a-0", "Running", "127.1.0.2"),
                      pod("harness-c-0", "Pending", None)], "127.0.0.1:9000")  # fmt: skip
    assert [g["targets"] for g in groups] == [["127.0.0.1:9000"], ["127.1.0.2:8090"],
                                              ["127.1.0.3:8090"]]  # fmt: skip
    assert groups[1]["labels"] == {"job": "cadre-harness", "namespace": "default",
                                   "pod": "harness-a-0", "agent": "a"}  # fmt: skip
