"""The local cluster with a real ``cadre operator`` process, and helpers to create Agents and
Tasks in it; the scripted model comes from the harness's fixtures."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from cadre.api.names import MODEL_ENDPOINTS_ENV, MODEL_KEY_LABEL
from cadre.api.task import FINAL_PHASES
from cadre.localcluster.node import network
from cadre.operator import apply

from tests.harness.conftest import scripted
from tests.localcluster.conftest import REPO, Http, Served, for_pods, serving
from tools.manifests import render

__all__ = ["scripted"]

NS = "default"
METRICS_PORT = 19_000 + os.getpid() % 500
LIVENESS_PORT = METRICS_PORT + 500


@functools.cache
def admission_policies() -> tuple[dict[str, Any], ...]:
    """The chart's ValidatingAdmissionPolicy and binding, rendered by the real Helm engine."""
    return tuple(o for o in render() if o["kind"].startswith("ValidatingAdmissionPolic"))


ADMISSION = "/apis/admissionregistration.k8s.io/v1"


@contextlib.contextmanager
def local_cluster(tmp_path: Path, **kubelet_options: Any) -> Iterator[Served]:
    """The local cluster with the chart's admission policy installed, as on a real cluster:
    every operator test shows that the harnesses' status writes pass it."""
    with serving(
        tmp_path, crd_dir=REPO / "crds", kubelet_dir=tmp_path / "node",
        kubelet_options={"backoff": 0.5, **kubelet_options},
    ) as served:  # fmt: skip
        for obj in admission_policies():
            plural = "validatingadmissionpolicies"
            if obj["kind"].endswith("Binding"):
                plural = "validatingadmissionpolicybindings"
            created = served.http("POST", f"{ADMISSION}/{plural}", obj)
            assert created.status_code == 201, created.text
        yield served


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Served]:
    with local_cluster(tmp_path) as served:
        yield served


@pytest.fixture
def apply_client(
    cluster: Served, monkeypatch: pytest.MonkeyPatch
) -> Iterator[kubernetes.client.ApiClient]:
    """The operator's ``apply`` calls, made from the test process on the local cluster's
    kubeconfig (the process-wide default configuration is left alone)."""
    kubeconfig = cluster.kubeconfig
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    api_client = kubernetes.client.ApiClient(configuration)
    monkeypatch.setattr(apply, "client", lambda: api_client)
    apply.dynamic.cache_clear()
    yield api_client
    apply.dynamic.cache_clear()
    api_client.close()


@contextlib.asynccontextmanager
async def operating(
    cluster: Served, folder: Path, **extra_env: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A ``cadre operator`` process on the cluster (``extra_env`` added to its settings),
    stopped by its PID after."""
    kubeconfig = cluster.kubeconfig
    log = (folder / "operator.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cadre.cli.main",
        "operator",
        "--namespace",
        NS,
        "--metrics-port",
        str(METRICS_PORT),
        "--liveness",
        f"http://127.0.0.1:{LIVENESS_PORT}/healthz",
        env={
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "CADRE_HARNESS_IMAGE": "ghcr.io/cadre-dev/cadre:test",
            "CADRE_SANDBOX_IMAGE": "ghcr.io/cadre-dev/sandbox:test",
            "CADRE_SANDBOX_RELEASE_SECONDS": "1",
            MODEL_ENDPOINTS_ENV: SCRIPTED_ENDPOINTS,
            **extra_env,
        },
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        await proc.wait()
        log.close()


@pytest.fixture
async def operator(cluster: Served, tmp_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    async with operating(cluster, tmp_path) as proc:
        yield proc


CADRE = f"/apis/cadre.dev/v1alpha1/namespaces/{NS}"
SCRIPTED_MODEL_ENDPOINTS = ("http://127.0.0.1:*", f"http://{network.NODE_IP}:*")
SCRIPTED_ENDPOINTS = ", ".join(SCRIPTED_MODEL_ENDPOINTS)
"""The operator's model allow-list in tests: the scripted models listen on loopback, on any
port, which pods with a network of their own reach at the node's address."""


def model_key_secret(name: str, key: str, *, labelled: bool = True) -> dict[str, Any]:
    """A Secret holding a model key, labelled as one (the owner's consent) unless told not."""
    labels = {MODEL_KEY_LABEL: "true"} if labelled else {}
    return {"metadata": {"name": name, "labels": labels}, "stringData": {"api-key": key}}


def create_agent(http: Http, url: str | None, name: str = "engineer", **extra: Any) -> None:
    """The API-key Secret (once) and an Agent using the scripted model at ``url``."""
    http("POST", f"/api/v1/namespaces/{NS}/secrets", model_key_secret("anthropic", "sk-test"))
    spec: dict[str, Any] = {
        "role": "Writes code",
        "model": "claude-sonnet-4-6",
        "apiKeySecretRef": {"name": "anthropic"},
        **extra,
    }
    if url is not None:
        spec["baseURL"] = for_pods(url)
    agent = {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": spec,
    }
    assert http("POST", f"{CADRE}/agents", agent).status_code == 201


def create_task(
    http: Http, name: str, prompt: str, agent: str | None = "engineer", **spec: Any
) -> None:
    """A Task for ``agent`` (or, with ``team=NAME`` in ``spec``, for a Team)."""
    assignee = {"team": spec.pop("team")} if "team" in spec else {"agent": agent}
    task = {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"assignee": assignee, "prompt": prompt, **spec},
    }
    response = http("POST", f"{CADRE}/tasks", task)
    assert response.status_code == 201, response.text


def ended(http: Http, name: str) -> dict[str, Any] | None:
    """The Task once it has ended, else None."""
    found: dict[str, Any] = http("GET", f"{CADRE}/tasks/{name}").json()
    return found if (found.get("status") or {}).get("phase") in FINAL_PHASES else None


def agent_ready(http: Http, name: str) -> bool:
    status = http("GET", f"{CADRE}/agents/{name}").json().get("status") or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
