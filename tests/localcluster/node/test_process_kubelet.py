"""The process kubelet: pods of Cadre's images run as local processes and report status as a
kubelet does; checked with the real kubectl and plain HTTPS."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from cadre.localcluster.runner import ThreadedApiServer, threaded_apiserver

from tests.localcluster.conftest import Http, Kubectl
from tests.localcluster.node.conftest import eventually, pod_status, python_pod


def _container(http: Http, namespace: str, name: str) -> dict[str, Any]:
    statuses = pod_status(http, namespace, name).get("containerStatuses") or [{}]
    found: dict[str, Any] = statuses[0]
    return found


SERVER = """
import http.server, os
os.chdir("/tmp")  # a folder the pod's user may list, so GET / answers 200
print("listening", flush=True)
handler = http.server.SimpleHTTPRequestHandler
http.server.ThreadingHTTPServer((os.environ["POD_IP"], 8080), handler).serve_forever()
"""
KEY_REF = {"name": "key", "key": "api-key"}
POD_IP = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}


def test_a_pod_runs_becomes_ready_and_logs(kubectl: Kubectl, http: Http, namespace: str) -> None:
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
    pod = python_pod(
        "web",
        SERVER,
        container={
            "env": [POD_IP],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": probe,
        },
    )
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    kubectl("wait", "pod/web", "-n", namespace, "--for=condition=Ready", "--timeout=20s")
    status = pod_status(http, namespace, "web")
    assert status["phase"] == "Running"
    # Its own network's address (root, nftables) or a loopback address of its own.
    assert status["podIP"].startswith(("10.232.", "127.1."))
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    assert "listening" in kubectl("logs", "web", "-n", namespace).stdout
    row = kubectl("get", "pod", "web", "-n", namespace).stdout.splitlines()[1].split()
    assert row[1:3] == ["1/1", "Running"]


def test_logs_follow_until_the_container_ends(kubectl: Kubectl, namespace: str) -> None:
    script = (
        "import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.3)"
    )
    pod = python_pod("ticker", script, restartPolicy="Never")
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(pod))
    kubectl(
        "wait",
        "pod/ticker",
        "-n",
        namespace,
        "--for=jsonpath={.status.phase}=Running",
        "--timeout=20s",
    )
    followed = kubectl("logs", "-f", "ticker", "-n", namespace).stdout
    assert followed.split("\n")[:3] == ["tick 0", "tick 1", "tick 2"]


def test_deletion_sends_sigterm_then_sigkill_after_the_grace_period(
    kubectl: Kubectl, http: Http, namespace: str
) -> None:
    script = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: print('ignoring TERM', flush=True))\n"
        "print('up', flush=True)\n"
        "while True: time.sleep(0.1)"
    )
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(python_pod("stubborn", script, terminationGracePeriodSeconds=1)),
    )
    eventually(lambda: "up" in kubectl("logs", "stubborn", "-n", namespace, check=False).stdout)
    began = time.monotonic()
    kubectl("delete", "pod", "stubborn", "-n", namespace, "--timeout=20s")
    took = time.monotonic() - began
    assert 0.9 <= took < 10
    assert http("GET", f"/api/v1/namespaces/{namespace}/pods/stubborn").status_code == 404


def test_a_crashing_container_restarts_with_a_count(http: Http, namespace: str) -> None:
    http(
        "POST", f"/api/v1/namespaces/{namespace}/pods", python_pod("crasher", "raise SystemExit(3)")
    )
    container = eventually(
        lambda: (c := _container(http, namespace, "crasher")).get("restartCount", 0) >= 2 and c
    )
    assert container["lastState"]["terminated"]["exitCode"] == 3
    assert container["lastState"]["terminated"]["reason"] == "Error"


@pytest.mark.parametrize(
    ("policy", "code", "phase"),
    [("Never", 1, "Failed"), ("OnFailure", 0, "Succeeded"), ("Never", 0, "Succeeded")],
)
def test_restart_policy_decides_the_final_phase(
    http: Http, namespace: str, policy: str, code: int, phase: str
) -> None:
    name = f"ends-{policy.lower()}-{code}"
    http(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        python_pod(name, f"raise SystemExit({code})", restartPolicy=policy),
    )
    eventually(lambda: pod_status(http, namespace, name).get("phase") == phase)
    container = _container(http, namespace, name)
    assert container["state"]["terminated"]["exitCode"] == code
    assert container["restartCount"] == 0


def test_an_image_that_is_not_cadres_stays_pending_with_the_reason(
    http: Http, namespace: str
) -> None:
    pod = python_pod("foreign", "print(1)")
    pod["spec"]["containers"][0]["image"] = "nginx:1.27"
    http("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    waiting = eventually(
        lambda: _container(http, namespace, "foreign").get("state", {}).get("waiting")
    )
    assert waiting["reason"] == "ErrImagePull"
    assert "not one of Cadre's images" in waiting["message"]
    assert pod_status(http, namespace, "foreign")["phase"] == "Pending"


def test_a_missing_secret_keeps_the_pod_creating_until_it_appears(
    http: Http, namespace: str
) -> None:
    script = "import os, time; print(open(os.environ['KEY']).read(), flush=True); time.sleep(30)"
    pod = python_pod("needs", script, volumes=[{"name": "s", "secret": {"secretName": "late"}}])
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "s", "mountPath": "/etc/s"}]
    pod["spec"]["containers"][0]["env"] = [{"name": "KEY", "value": "/etc/s/k"}]
    http("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    waiting = eventually(
        lambda: (
            _container(http, namespace, "needs").get("state", {}).get("waiting", {}).get("message")
        )
    )
    assert 'secret "late" not found' in waiting
    http(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "late"}, "stringData": {"k": "v"}},
    )
    eventually(lambda: "running" in _container(http, namespace, "needs").get("state", {}))
    eventually(lambda: http("GET", f"/api/v1/namespaces/{namespace}/pods/needs/log").text == "v\n")


def test_a_pod_with_a_token_reaches_the_api_and_one_without_gets_401(
    http: Http, namespace: str
) -> None:
    script = """
import kubernetes, os, sys
try:
    kubernetes.config.load_config()
    client = kubernetes.client.CoreV1Api()
    print("namespaces", len(client.list_namespace().items), flush=True)
except Exception as error:
    print("error", getattr(error, "status", type(error).__name__), flush=True)
"""
    http(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        python_pod("with-token", script, restartPolicy="Never"),
    )
    http(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        python_pod("no-token", script, restartPolicy="Never", automountServiceAccountToken=False),
    )
    for name in ("with-token", "no-token"):
        eventually(lambda name=name: pod_status(http, namespace, name).get("phase") == "Succeeded")
    logs = {
        name: http("GET", f"/api/v1/namespaces/{namespace}/pods/{name}/log").text
        for name in ("with-token", "no-token")
    }
    # Authenticated as the pod's account (with a root of its own, in-cluster configuration
    # finds the token at its mount path), which RBAC grants nothing.
    assert logs["with-token"].strip().endswith("error 403"), logs
    assert not logs["no-token"].startswith("namespaces")
    with_admin = python_pod(
        "admin-check",
        "import os; print(os.environ.get('KUBECONFIG'))",
        restartPolicy="Never",
        automountServiceAccountToken=False,
    )
    http("POST", f"/api/v1/namespaces/{namespace}/pods", with_admin)
    eventually(lambda: pod_status(http, namespace, "admin-check").get("phase") == "Succeeded")
    assert (
        http("GET", f"/api/v1/namespaces/{namespace}/pods/admin-check/log").text.strip() == "None"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="per-pod users need the kubelet to run as root")
def test_pods_cannot_read_each_others_environment_files_or_secrets(
    http: Http, namespace: str, apiserver: ThreadedApiServer
) -> None:
    http(
        "POST",
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "key"}, "stringData": {"api-key": "sk-secret-value"}},
    )
    holder = python_pod(
        "holder", "import time, os\nprint(os.getpid(), flush=True)\ntime.sleep(60)",
        volumes=[
            {"name": "key", "secret": {"secretName": "key"}},
            {"name": "data", "emptyDir": {}},
        ],
        container={
            "env": [{"name": "API_KEY", "valueFrom": {"secretKeyRef": KEY_REF}}],
            "volumeMounts": [
                {"name": "key", "mountPath": "/var/run/key"},
                {"name": "data", "mountPath": "/data"},
            ],
        },
        securityContext={"runAsUser": 10001},
    )  # fmt: skip
    http("POST", f"/api/v1/namespaces/{namespace}/pods", holder)
    eventually(
        lambda: (
            http("GET", f"/api/v1/namespaces/{namespace}/pods/holder/log").text.strip().isdigit()
        )
    )
    seen_inside = http("GET", f"/api/v1/namespaces/{namespace}/pods/holder/log").text.strip()
    assert seen_inside == "1"  # PID 1 of its own PID namespace
    found = subprocess.run(
        ["pgrep", "-f", "time.sleep\\(60\\)"], capture_output=True, text=True
    ).stdout.split()
    # The holder's python as the host sees it (the newest of unshare, setpriv's exec, python).
    pid = max(found, key=int)
    assert apiserver.kubelet is not None
    uid = http("GET", f"/api/v1/namespaces/{namespace}/pods/holder").json()["metadata"]["uid"]
    key_dir = apiserver.kubelet.state_dir / "pods" / uid / "volumes"
    assert (key_dir / "key" / "api-key").read_text() == "sk-secret-value"  # the kubelet wrote it
    (key_dir / "data" / "notes").write_text("sk-secret-value")
    probe = f"""
results = []
for path in ["/proc/{pid}/environ", "{key_dir}/key/api-key", "{key_dir}/data/notes"]:
    try:
        results.append(("read", path, "sk-secret-value" in open(path, errors="replace").read()))
    except OSError as error:
        results.append(("denied", path, type(error).__name__))
print(results, flush=True)
"""
    # Same container uid as the holder: still another host user, as with user namespaces.
    http(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        python_pod("prober", probe, restartPolicy="Never", securityContext={"runAsUser": 10001}),
    )
    eventually(lambda: pod_status(http, namespace, "prober").get("phase") == "Succeeded")
    out = http("GET", f"/api/v1/namespaces/{namespace}/pods/prober/log").text
    assert "'read'" not in out, out
    # The holder's environ is not even visible from the prober's PID namespace; its files are
    # not in the prober's root at all (with bwrap) or another host user's (without).
    assert out.count("PermissionError") + out.count("FileNotFoundError") == 3, out
    if not apiserver.kubelet.rootfs:
        assert out.count("PermissionError") >= 2, out  # the secret file, the emptyDir file


def test_logs_show_the_current_run_and_previous_the_last_one(
    kubectl: Kubectl, http: Http, namespace: str
) -> None:
    script = (
        "import os, time\n"
        "print('run', len(os.listdir(os.environ['D'])), flush=True)\n"
        "open(os.path.join(os.environ['D'], str(time.time())), 'w').close()\n"
        "time.sleep(0.3)\n"
        "raise SystemExit(1)"
    )
    pod = python_pod("runs", script, volumes=[{"name": "d", "emptyDir": {}}])
    pod["spec"]["containers"][0].update(
        env=[{"name": "D", "value": "/d"}], volumeMounts=[{"name": "d", "mountPath": "/d"}]
    )
    http("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    eventually(lambda: _container(http, namespace, "runs").get("restartCount", 0) >= 2)
    current = kubectl("logs", "runs", "-n", namespace).stdout
    previous = kubectl("logs", "runs", "-n", namespace, "--previous").stdout
    assert current.count("run") == 1
    assert previous.count("run") == 1
    assert current != previous
    fresh = python_pod("fresh", "import time; time.sleep(30)")
    http("POST", f"/api/v1/namespaces/{namespace}/pods", fresh)
    eventually(lambda: pod_status(http, namespace, "fresh").get("phase") == "Running")
    refused = kubectl("logs", "fresh", "-n", namespace, "--previous", check=False)
    assert 'previous terminated container "main" in pod "fresh" not found' in refused.stderr


def test_a_service_lists_its_ready_pods_as_endpoints(http: Http, namespace: str) -> None:
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
    pod = python_pod(
        "backend",
        SERVER,
        container={
            "env": [POD_IP],
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": probe,
        },
    )
    pod["metadata"]["labels"] = {"app": "backend"}
    http("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    service = {
        "metadata": {"name": "backend"},
        "spec": {
            "selector": {"app": "backend"},
            "ports": [{"name": "web", "port": 80, "targetPort": "http"}],
        },
    }
    http("POST", f"/api/v1/namespaces/{namespace}/services", service)

    def ready_addresses() -> list[str]:
        found = http("GET", f"/api/v1/namespaces/{namespace}/endpoints/backend")
        subsets = found.json().get("subsets") or [{}] if found.status_code == 200 else [{}]
        return [a["ip"] for a in subsets[0].get("addresses", [])]

    addresses = eventually(ready_addresses)
    assert addresses == [pod_status(http, namespace, "backend")["podIP"]]
    endpoints = http("GET", f"/api/v1/namespaces/{namespace}/endpoints/backend").json()
    assert endpoints["subsets"][0]["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    http("DELETE", f"/api/v1/namespaces/{namespace}/pods/backend")
    eventually(lambda: ready_addresses() == [])


def test_a_container_starts_once_however_fast_the_pod_loop_ticks(tmp_path: Path) -> None:
    """The pod loop ticks while a process is still being exec'd; a container must not be
    started again in that window (two harnesses on one session log were the symptom)."""
    with threaded_apiserver(kubelet_dir=tmp_path / "node", kubelet_options={"tick": 0.0005}) as h:
        server = h.server
        assert server is not None
        (tmp_path / "ca.crt").write_text(server.ca_pem)
        http = Http(server.url, tmp_path / "ca.crt", server.admin_token)
        for index in range(3):  # several at once, as the demo's three harnesses start
            pod = python_pod(f"once-{index}", "import time; print('started', flush=True); "
                             "time.sleep(30)")  # fmt: skip
            assert http("POST", "/api/v1/namespaces/default/pods", pod).status_code == 201
        for index in range(3):
            eventually(lambda i=index: pod_status(http, "default", f"once-{i}").get("phase")
                       == "Running")  # fmt: skip

        def log(i: int) -> str:
            return str(http("GET", f"/api/v1/namespaces/default/pods/once-{i}/log").text)

        for index in range(3):  # python may take a while to start on a loaded machine
            eventually(lambda i=index: "started" in log(i), timeout=60)
        time.sleep(1.0)  # a second start, begun in the same window, has printed by now
        for index in range(3):
            assert log(index).count("started") == 1, log(index)


def test_a_start_delay_holds_one_image_back_and_no_other(tmp_path: Path) -> None:
    """``start_delay`` (for benchmarks: a slow image pull) keeps that image's containers
    waiting in ContainerCreating while other images start at once."""
    delay = {"ghcr.io/cadre-dev/sandbox": 600.0}
    with threaded_apiserver(
        kubelet_dir=tmp_path / "node", kubelet_options={"start_delay": delay}
    ) as handle:
        server = handle.server
        assert server is not None
        (tmp_path / "ca.crt").write_text(server.ca_pem)
        http = Http(server.url, tmp_path / "ca.crt", server.admin_token)
        script = "import time; time.sleep(30)"
        slow = python_pod("slow", script, container={"image": "ghcr.io/cadre-dev/sandbox:t"})
        for pod in (slow, python_pod("quick", script)):
            assert http("POST", "/api/v1/namespaces/default/pods", pod).status_code == 201
        eventually(lambda: pod_status(http, "default", "quick").get("phase") == "Running")
        time.sleep(0.5)  # several pod-loop ticks
        assert pod_status(http, "default", "slow").get("phase") == "Pending"
        waiting = _container(http, "default", "slow")["state"]["waiting"]
        assert waiting["reason"] == "ContainerCreating"
