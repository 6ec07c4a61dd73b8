"""The pod network, tried as an attacker would: each pod has a network namespace and an
address of its own, and the NetworkPolicies Cadre builds are enforced. A sandbox with egress
``None`` connects nowhere (another pod's server such as a harness's event server, the model
server and the API server on the node, an outside address); a pod takes connections only from
the pods its policy names (and from the node: probes, the API server's pod proxy); a policy
change applies to running pods; pods of two local clusters do not reach each other."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import socket
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cadre.api.agent import Sandbox
from cadre.api.names import AGENT_LABEL, COMPONENT_LABEL
from cadre.localcluster.node import network
from cadre.localcluster.node.egress import name_servers
from cadre.localcluster.runner import ThreadedApiServer, threaded_apiserver
from cadre.operator.sandbox_builders import (
    SandboxDefaults,
    SandboxTarget,
    build_sandbox_objects,
    build_sandbox_service_account,
)

from tests.localcluster.conftest import REPO, Http, create_all, task_manifest
from tests.localcluster.node.conftest import eventually, pod_status, python_pod

pytestmark = pytest.mark.skipif(
    network.probe() is not None,
    reason=f"pods get no network of their own here: {network.probe()}",
)

OUTSIDE = "203.0.113.1"  # TEST-NET-3: an address beyond this machine
POD_IP = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
LISTENER = (
    "import os, socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 8090)); s.listen()\n"  # every address: the pod's own network
    "print('listening', flush=True)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'transcript'); c.close()\n"
)
CONNECTOR = (
    "import json, socket\n"
    "result = {}\n"
    "for host, port in TARGETS:\n"
    "    try:\n"
    "        socket.create_connection((host, port), timeout=5).close()\n"
    "        result[f'{host}:{port}'] = 'connected'\n"
    "    except OSError as err:\n"
    "        result[f'{host}:{port}'] = type(err).__name__\n"
    "print('RESULT' + json.dumps(result), flush=True)\n"
)


def _connector(targets: list[tuple[str, int]]) -> str:
    return CONNECTOR.replace("TARGETS", repr(targets))


@contextlib.contextmanager
def _loopback_server() -> Iterator[int]:
    """A server on the host's loopback, as the scripted model and the API server listen."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = server.accept()
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        server.close()
        thread.join(timeout=5)


def _create(http: Http, namespace: str, obj: dict[str, Any], plural: str = "pods") -> None:
    group = "/apis/networking.k8s.io/v1" if plural == "networkpolicies" else "/api/v1"
    response = http("POST", f"{group}/namespaces/{namespace}/{plural}", obj)
    assert response.status_code == 201, response.text


def _listening(http: Http, namespace: str, name: str, labels: dict[str, str]) -> str:
    pod = python_pod(name, LISTENER, terminationGracePeriodSeconds=0)
    pod["metadata"]["labels"] = labels
    _create(http, namespace, pod)
    log = f"/api/v1/namespaces/{namespace}/pods/{name}/log"
    eventually(lambda: "listening" in http("GET", log).text, timeout=30)
    return str(pod_status(http, namespace, name)["podIP"])


def _results_of(http: Http, namespace: str, name: str) -> dict[str, str]:
    log = f"/api/v1/namespaces/{namespace}/pods/{name}/log"
    text = eventually(lambda: "RESULT" in (t := http("GET", log).text) and t, timeout=60)
    found: dict[str, str] = json.loads(text.split("RESULT", 1)[1].splitlines()[0])
    return found


def _connect_from_pod(
    http: Http, namespace: str, name: str, targets: list[tuple[str, int]],
    labels: dict[str, str] | None = None,
) -> dict[str, str]:  # fmt: skip
    pod = python_pod(name, _connector(targets), restartPolicy="Never")
    pod["metadata"]["labels"] = labels or {}
    _create(http, namespace, pod)
    return _results_of(http, namespace, name)


def _ready(status: dict[str, Any]) -> dict[str, Any] | None:
    conditions = {c["type"]: c["status"] for c in status.get("conditions", [])}
    return status if conditions.get("Ready") == "True" else None


def _tool_call(address: str, token: str, command: str) -> str:
    request = urllib.request.Request(
        f"http://{address}:8080/v1/tool-calls",
        data=json.dumps(
            {"tool_use_id": "toolu_1", "name": "bash", "input": {"command": command}}
        ).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - pod address
        content: str = json.loads(response.read())["content"]
    return content


def test_a_cadre_sandbox_with_egress_none_connects_nowhere(http: Http, namespace: str) -> None:
    """The sandbox exactly as the operator builds it (egress ``None``), asked by a tool call
    to connect to everything a stolen key or transcript could come from."""
    harness_ip = _listening(http, namespace, "harness-engineer-0", {
        COMPONENT_LABEL: "harness", AGENT_LABEL: "engineer"})  # fmt: skip
    with _loopback_server() as model_port:
        targets = [(harness_ip, 8090), (network.NODE_IP, model_port), (network.NODE_IP, 443),
                   (OUTSIDE, 443)]  # fmt: skip
        # Any other pod reaches the harness's port, the model and the API server: the
        # sandbox's refusals below are its policy's doing.
        assert _connect_from_pod(http, namespace, "bystander", targets[:3]) == {
            f"{h}:{p}": "connected" for h, p in targets[:3]
        }
        token = "session-token-for-test"
        task = http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks",
                    task_manifest("fix")).json()  # fmt: skip
        target = SandboxTarget(
            namespace=namespace, task="fix", task_uid=task["metadata"]["uid"],
            agent="engineer", spec=Sandbox(),
            token_sha256=hashlib.sha256(token.encode()).hexdigest(),
        )  # fmt: skip
        objects = build_sandbox_objects(
            target, SandboxDefaults(image="ghcr.io/cadre-dev/sandbox:t")
        )
        assert next(o for o in objects if o["kind"] == "NetworkPolicy")["spec"]["egress"] == []
        create_all(http, namespace, [build_sandbox_service_account(namespace), *objects])
        ready = eventually(lambda: _ready(pod_status(http, namespace, "sbx-fix")), timeout=30)
        script = base64.b64encode(_connector(targets).encode()).decode()
        said = _tool_call(ready["podIP"], token, f"echo {script} | base64 -d | python3")
    results = json.loads(said.split("RESULT", 1)[1].splitlines()[0])
    assert results == {f"{h}:{p}": "ConnectionRefusedError" for h, p in targets[:3]} | {
        f"{OUTSIDE}:443": results[f"{OUTSIDE}:443"]
    }, results
    assert results[f"{OUTSIDE}:443"] != "connected"


def test_a_pod_takes_connections_only_from_the_pods_its_policy_names(
    http: Http, namespace: str
) -> None:
    server_ip = _listening(http, namespace, "server", {"app": "server"})
    policy = {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "server"},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                              "ports": [{"protocol": "TCP", "port": 8090}]}]},
    }  # fmt: skip
    _create(http, namespace, policy, "networkpolicies")
    target = [(server_ip, 8090)]
    assert _connect_from_pod(http, namespace, "client", target, {"role": "client"}) == {
        f"{server_ip}:8090": "connected"
    }
    assert _connect_from_pod(http, namespace, "stranger", target, {"role": "stranger"}) == {
        f"{server_ip}:8090": "ConnectionRefusedError"
    }
    # The node itself (probes, the API server's pod proxy) is let through, as CNIs do.
    with socket.create_connection((server_ip, 8090), timeout=10) as conn:
        assert conn.recv(16) == b"transcript"
    # A policy change applies to the pods already running.
    http("DELETE", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/server")
    assert _connect_from_pod(http, namespace, "stranger2", target, {"role": "stranger"}) == {
        f"{server_ip}:8090": "connected"
    }


def test_every_pod_has_its_own_ports(http: Http, namespace: str) -> None:
    """Two pods listen on 0.0.0.0:8090 at once: each has its own network namespace."""
    first = _listening(http, namespace, "one", {})
    second = _listening(http, namespace, "two", {})
    assert first != second
    for address in (first, second):
        with socket.create_connection((address, 8090), timeout=10) as conn:
            assert conn.recv(16) == b"transcript"


@pytest.fixture
def second_cluster(tmp_path: Path) -> Iterator[ThreadedApiServer]:
    with threaded_apiserver(crd_dir=REPO / "crds", kubelet_dir=tmp_path / "node2") as handle:
        yield handle


def test_pods_of_two_local_clusters_do_not_reach_each_other(
    http: Http, namespace: str, second_cluster: ThreadedApiServer, tmp_path: Path
) -> None:
    server = second_cluster.server
    assert server is not None
    (tmp_path / "ca2.crt").write_text(server.ca_pem)
    other = Http(server.url, tmp_path / "ca2.crt", server.admin_token)
    theirs = _listening(other, "default", "theirs", {})
    ours = _listening(http, namespace, "ours", {})
    found = _connect_from_pod(http, namespace, "prober", [(theirs, 8090), (ours, 8090)])
    assert found[f"{ours}:8090"] == "connected"
    assert found[f"{theirs}:8090"] != "connected", found
    other("DELETE", "/api/v1/namespaces/default/pods/theirs")


def _host_address() -> str | None:
    """This machine's address on its default route (no packet is sent)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((OUTSIDE, 9))
        address: str = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return address


def test_connections_beyond_the_machine_are_relayed_within_the_pods_policy(
    http: Http, namespace: str
) -> None:
    """A pod reaches an address outside the pod network through the kubelet's relay (the
    machine's own outward address stands in for the Internet, which this machine lacks), and
    only where its egress policy allows."""
    address = _host_address()
    if address is None:
        pytest.skip("this machine has no default route")
    server = socket.socket()
    server.bind((address, 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        target = [(address, port)]
        assert _connect_from_pod(http, namespace, "free", target) == {
            f"{address}:{port}": "connected"
        }
        policy = {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "allow-list"},
            "spec": {"podSelector": {"matchLabels": {"app": "listed"}}, "policyTypes": ["Egress"],
                     "egress": [{"to": [{"ipBlock": {"cidr": f"{address}/32"}}]}]},
        }  # fmt: skip
        _create(http, namespace, policy, "networkpolicies")
        found = _connect_from_pod(http, namespace, "listed", [*target, (OUTSIDE, 443)],
                                  {"app": "listed"})  # fmt: skip
        assert found == {f"{address}:{port}": "connected",
                         f"{OUTSIDE}:443": "ConnectionRefusedError"}, found  # fmt: skip
    finally:
        server.close()


def test_a_pod_resolves_names_as_the_host_does(http: Http, namespace: str) -> None:
    """Through the kubelet's DNS relay, to the host's own name servers."""
    if not name_servers():
        pytest.skip("the host's name servers are on its loopback: pods cannot use them")
    try:
        expected = {a[4][0] for a in socket.getaddrinfo("pypi.org", 443, socket.AF_INET)}
    except OSError:
        pytest.skip("this machine resolves no Internet name")
    script = (
        "import socket\n"
        "found = sorted({a[4][0] for a in socket.getaddrinfo('pypi.org', 443, socket.AF_INET)})\n"
        "print('RESOLVED', ' '.join(found), flush=True)\n"
    )
    _create(http, namespace, python_pod("resolver", script, restartPolicy="Never"))
    log = f"/api/v1/namespaces/{namespace}/pods/resolver/log"
    text = eventually(lambda: "RESOLVED" in (t := http("GET", log).text) and t, timeout=60)
    assert set(text.split("RESOLVED", 1)[1].split()) & expected, text
