"""The chart installed into the local cluster the way a user installs the plain manifests:
`kubectl apply` of everything it renders (CRDs, ServiceAccount, RBAC, Service, Deployment),
then the operator runs as a pod under its own ServiceAccount, with nothing but the chart's
RBAC, and works an Agent's Task to Succeeded. This is the test that the chart's RBAC is
enough (the local API server enforces RBAC as Kubernetes does).

The local cluster has no Deployment controller: the test creates the one pod the Deployment's
ReplicaSet would (its template, under a name of its own), and says so here."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.conftest import ModelFactory, scripted, until
from tests.localcluster.conftest import Served, for_pods, serving
from tests.operator.conftest import SCRIPTED_MODEL_ENDPOINTS, model_key_secret
from tools.manifests import render

__all__ = ["scripted"]
NS = "default"
SYSTEM = "cadre-system"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def bare_cluster(tmp_path: Path) -> Iterator[Served]:
    """A local cluster with no CRDs: the install brings them."""
    with serving(tmp_path, kubelet_dir=tmp_path / "node", kubelet_options={"backoff": 0.5}) as (
        served
    ):
        yield served


def kubectl(kubeconfig: Path, cache: Path, *args: str, input: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}", *args],
        input=input, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


WRITE = {"name": "write", "input": {"path": "a.txt", "content": "a"}}
STEPS = [
    {"text": "Writing.", "tool_uses": [WRITE]},
    {"text": "Installed by the chart, and working."},
]  # fmt: skip


async def test_the_rendered_chart_installs_and_its_operator_works_a_task(
    bare_cluster: Served, scripted: ModelFactory, tmp_path: Path
) -> None:
    http, kubeconfig = bare_cluster.http, bare_cluster.kubeconfig
    cache = tmp_path / "kcache"
    # 0.0.0.0 ports are shared by every pod of the local cluster: pick free ones.
    values = {
        "metrics": {"port": free_port()}, "liveness": {"port": free_port()},
        "modelEndpoints": list(SCRIPTED_MODEL_ENDPOINTS),
        "console": {"enabled": True, "approvals": True},
    }  # fmt: skip
    objects = render(values, namespace=SYSTEM)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": SYSTEM}}
    manifests = "---\n".join(yaml.safe_dump(o) for o in [namespace, *objects])
    await asyncio.to_thread(kubectl, kubeconfig, cache, "apply", "-f", "-", input=manifests)

    deployments = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Deployment"}
    for name, pod_name in (("cadre", "cadre-operator"), ("cadre-console", "cadre-console")):
        template = deployments[name]["spec"]["template"]
        pod: dict[str, Any] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "labels": template["metadata"]["labels"]},
            "spec": template["spec"],
        }  # fmt: skip
        assert http("POST", f"/api/v1/namespaces/{SYSTEM}/pods", pod).status_code == 201

    def running(name: str) -> bool:
        found = http("GET", f"/api/v1/namespaces/{SYSTEM}/pods/{name}").json()
        statuses = (found.get("status") or {}).get("containerStatuses") or [{}]
        return statuses[0].get("ready") is True or "running" in statuses[0].get("state", {})

    await until(lambda: running("cadre-operator"), within=60)

    url, _ = await scripted({"agents": {"engineer": STEPS}})
    secret = model_key_secret("anthropic", "sk-test")
    assert http("POST", f"/api/v1/namespaces/{NS}/secrets", secret).status_code == 201
    agent = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "engineer"},
             "spec": {"role": "r", "model": "claude-sonnet-4-6", "baseURL": for_pods(url),
                      "apiKeySecretRef": {"name": "anthropic"}}}  # fmt: skip
    task = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Task", "metadata": {"name": "first"},
            "spec": {"assignee": {"agent": "engineer"}, "prompt": "Write a.txt."}}  # fmt: skip
    await asyncio.to_thread(
        kubectl, kubeconfig, cache, "apply", "-n", NS, "-f", "-",
        input=yaml.safe_dump(agent) + "---\n" + yaml.safe_dump(task),
    )  # fmt: skip
    waited = await asyncio.to_thread(
        subprocess.run,
        ["kubectl", f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}", "wait", "-n", NS,
         "task/first", "--for=condition=Succeeded", "--timeout=90s"],
        capture_output=True, text=True,
    )  # fmt: skip
    logs = http("GET", f"/api/v1/namespaces/{SYSTEM}/pods/cadre-operator/log").text
    assert waited.returncode == 0, (waited.stderr, logs[-4000:])
    status = http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks/first").json()["status"]
    assert status["result"]["summary"] == "Installed by the chart, and working."
    # Nothing the operator asked for was refused: the chart's RBAC covers what it does. (The
    # lines' timestamps are left out: their milliseconds can read 403.)
    said = "\n".join(re.sub(r"^\[[^\]]*\]", "", line) for line in logs.splitlines())
    assert "403" not in said
    assert "Forbidden" not in said
    await _the_console_shows_it_with_the_charts_rbac(http)


async def _the_console_shows_it_with_the_charts_rbac(http: Any) -> None:
    """The chart's console, under its own ServiceAccount and nothing else, read through the
    API server's pod proxy as a user would port-forward to it: the Task, the Agent's memory and
    the session's transcript, with no refusal."""
    proxy = f"/api/v1/namespaces/{SYSTEM}/pods/cadre-console:8070/proxy"
    ready = await until(lambda: (r := http("GET", f"{proxy}/healthz")).ok and r.text == "ok",
                        within=60)  # fmt: skip
    assert ready
    page = await until(lambda: (r := http("GET", f"{proxy}/tasks")).ok and "first" in r.text
                       and 'data-phase="Succeeded"' in r.text and r.text)  # fmt: skip
    assert "cannot read" not in page
    agent = http("GET", f"{proxy}/agents/{NS}/engineer").text
    assert "Memory (" in agent
    assert "cannot read the memory" not in agent
    transcript = http("GET", f"{proxy}/tasks/{NS}/first/transcript").text
    assert "Installed by the chart, and working." in transcript
    assert "event: end" in transcript
