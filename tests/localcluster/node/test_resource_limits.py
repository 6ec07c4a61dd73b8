"""Resource limits of local pods, tried as a runaway process would: a container over its memory
limit is OOM-killed and reported so; a fork bomb stops at the pod's pids limit and the node
lives on; a CPU limit becomes the container's CPU quota. Skipped, saying why, where the kubelet
cannot write cgroups (not root, no cgroup v1 hierarchies)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cadre.localcluster.node import cgroups

from tests.localcluster.conftest import Http
from tests.localcluster.node.conftest import eventually, pod_status, python_pod

_PROBED, WHY = cgroups.probe(f"probe-{os.getpid()}")
if _PROBED is not None:
    _PROBED.close()  # only asked whether it works: leave nothing behind
pytestmark = pytest.mark.skipif(
    not WHY.startswith("memory, CPU and pids"), reason=f"no cgroups for pods here: {WHY}"
)


def _create(http: Http, namespace: str, pod: dict[str, object]) -> None:
    response = http("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    assert response.status_code == 201, response.text


def _terminated(http: Http, namespace: str, name: str) -> dict[str, object] | None:
    statuses = pod_status(http, namespace, name).get("containerStatuses") or [{}]
    found: dict[str, object] | None = statuses[0].get("state", {}).get("terminated")
    return found


def test_a_container_over_its_memory_limit_is_oom_killed(http: Http, namespace: str) -> None:
    script = "chunks = []\nwhile True:\n    chunks.append(bytearray(8 * 1024 * 1024))\n"
    limited = {"resources": {"limits": {"memory": "64Mi"}}}
    _create(http, namespace, python_pod("hungry", script, restartPolicy="Never",
                                        container=limited))  # fmt: skip
    ended = eventually(lambda: _terminated(http, namespace, "hungry"), timeout=60)
    assert ended["reason"] == "OOMKilled"
    assert ended["exitCode"] == 137


def test_a_fork_bomb_stops_at_the_pods_pids_limit(http: Http, namespace: str) -> None:
    # Tries for 2000 processes (the default limit is 1024 per pod) and says how far it got.
    script = (
        "import os, time\n"
        "made = 0\n"
        "try:\n"
        "    for _ in range(2000):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        made += 1\n"
        "except OSError as err:\n"
        "    print('stopped after', made, err.errno, flush=True)\n"
        "else:\n"
        "    print('made', made, flush=True)\n"
    )
    _create(http, namespace, python_pod("forker", script, restartPolicy="Never",
                                        terminationGracePeriodSeconds=1))  # fmt: skip
    eventually(lambda: _terminated(http, namespace, "forker"), timeout=60)
    log = http("GET", f"/api/v1/namespaces/{namespace}/pods/forker/log").text
    assert "stopped after" in log, log
    made = int(log.split("stopped after")[1].split()[0])
    assert made < 1024
    http("DELETE", f"/api/v1/namespaces/{namespace}/pods/forker")


def test_a_cpu_limit_becomes_the_containers_quota(http: Http, namespace: str) -> None:
    script = "import time\nprint(open('/proc/self/cgroup').read(), flush=True)\ntime.sleep(600)\n"
    limited = {"resources": {"limits": {"cpu": "250m", "memory": "128Mi"}}}
    _create(http, namespace, python_pod("capped", script, container=limited,
                                        terminationGracePeriodSeconds=1))  # fmt: skip
    log = eventually(lambda: "cpu" in (text := http(
        "GET", f"/api/v1/namespaces/{namespace}/pods/capped/log").text) and text)  # fmt: skip
    cpu_path = next(line.split(":", 2)[2] for line in log.splitlines()
                    if line.split(":")[1] in ("cpu", "cpu,cpuacct"))  # fmt: skip
    quota = Path("/sys/fs/cgroup/cpu", cpu_path.lstrip("/"), "cpu.cfs_quota_us")
    assert quota.read_text().strip() == "25000"
    memory = Path("/sys/fs/cgroup/memory", cpu_path.lstrip("/"), "memory.limit_in_bytes")
    assert memory.read_text().strip() == str(128 * 1024 * 1024)
    http("DELETE", f"/api/v1/namespaces/{namespace}/pods/capped")


def test_quantities_and_limits_are_read_as_kubernetes_writes_them() -> None:
    assert cgroups.quantity("512Mi") == 512 * 2**20
    assert cgroups.quantity("1G") == 10**9
    assert cgroups.quantity("500m") == 0.5
    assert cgroups.quantity(2) == 2
    with pytest.raises(ValueError, match="not a quantity"):
        cgroups.quantity("lots")
    limits = cgroups.container_limits({"resources": {"limits": {"cpu": "2", "memory": "1Gi"}}},
                                      1024)  # fmt: skip
    assert limits == cgroups.Limits(memory_bytes=2**30, cpu_quota_us=200_000, pids=1024)
