"""A local API server per test module (on its own thread), reached through the real
``kubectl``, the real ``kubernetes`` client and plain HTTPS, as a cluster would be."""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import requests
from cadre.localcluster.node import network
from cadre.localcluster.runner import ThreadedApiServer, threaded_apiserver, write_kubeconfig

REPO = Path(__file__).resolve().parents[2]
_names = itertools.count()


@pytest.fixture(scope="module")
def apiserver() -> Iterator[ThreadedApiServer]:
    with threaded_apiserver(crd_dir=REPO / "crds", bookmark_interval=0.2) as handle:
        yield handle


@pytest.fixture(scope="module")
def kubeconfig(apiserver: ThreadedApiServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    assert apiserver.server is not None
    path = tmp_path_factory.mktemp("kube") / "config"
    write_kubeconfig(path, apiserver.server.kubeconfig())
    return path


@pytest.fixture(scope="module")
def api(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    client = kubernetes.config.new_client_from_config(str(kubeconfig))
    yield client
    client.close()


@pytest.fixture
def namespace(api: kubernetes.client.ApiClient) -> str:
    name = f"t{next(_names)}-{os.getpid() % 10000}"
    kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


@dataclass
class Http:
    """Plain HTTPS to the server, to check status codes and bodies exactly."""

    url: str
    ca_file: Path
    token: str | None

    def __call__(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        token: str | None = "default",
        headers: dict[str, str] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        sent = dict(headers or {})
        bearer = self.token if token == "default" else token
        if bearer:
            sent["Authorization"] = f"Bearer {bearer}"
        data = None
        if body is not None:
            sent["Content-Type"] = content_type
            data = body if isinstance(body, bytes | str) else json.dumps(body)
        return requests.request(
            method,
            self.url + path,
            data=data,
            headers=sent,
            verify=str(self.ca_file),
            timeout=30,
            stream=stream,
        )


@pytest.fixture(scope="module")
def http(apiserver: ThreadedApiServer, tmp_path_factory: pytest.TempPathFactory) -> Http:
    server = apiserver.server
    assert server is not None
    ca_file = tmp_path_factory.mktemp("ca") / "ca.crt"
    ca_file.write_text(server.ca_pem)
    return Http(server.url, ca_file, server.admin_token)


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def kubectl(kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed on this machine (the fidelity tests need it)")
    cache = tmp_path_factory.mktemp("kubectl-cache")

    def run(
        *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary, f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    return run


API_PATHS = {
    "Secret": "/api/v1/namespaces/{ns}/secrets",
    "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims",
    "NetworkPolicy": "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies",
    "Pod": "/api/v1/namespaces/{ns}/pods",
    "Service": "/api/v1/namespaces/{ns}/services",
    "ServiceAccount": "/api/v1/namespaces/{ns}/serviceaccounts",
}
"""Where to POST each kind the operator's builders make."""


@functools.cache
def pod_node_ip() -> str:
    """Where the pods of the tests' local clusters reach the host's loopback services: the
    node's address when each pod has a network of its own (root, nftables), else loopback."""
    return network.NODE_IP if network.probe() is None else "127.0.0.1"


def for_pods(url: str) -> str:
    """A test server's loopback ``url`` as a pod reaches it."""
    return network.as_seen_by_pods(url, pod_node_ip())


@dataclass(frozen=True)
class Served:
    """A local cluster a test talks to."""

    handle: ThreadedApiServer
    """The running server (its ``server`` for counters and faults)."""
    http: Http
    """Plain HTTPS to it, as admin."""
    kubeconfig: Path
    """An admin kubeconfig for kubectl, the kubernetes client and the CLI."""


@contextlib.contextmanager
def serving(folder: Path, **options: Any) -> Iterator[Served]:
    """A local cluster (``threaded_apiserver`` options) with its CA and an admin kubeconfig
    written into ``folder``."""
    with threaded_apiserver(**options) as handle:
        server = handle.server
        assert server is not None
        (folder / "ca.crt").write_text(server.ca_pem)
        kubeconfig = folder / "kubeconfig"
        write_kubeconfig(kubeconfig, server.kubeconfig())
        yield Served(handle, Http(server.url, folder / "ca.crt", server.admin_token), kubeconfig)


def create_all(http: Http, namespace: str, objects: list[dict[str, Any]]) -> None:
    """Create built objects in order, as the operator will; each must be accepted."""
    for obj in objects:
        response = http("POST", API_PATHS[obj["kind"]].format(ns=namespace), obj)
        assert response.status_code == 201, response.text


def task_manifest(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"assignee": {"agent": "lead"}, "prompt": "Say hello.", **spec},
    }


def agent_manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "role": "Writes code",
            "model": "claude-sonnet-4-6",
            "apiKeySecretRef": {"name": "anthropic", "key": "api-key"},
        },
    }
