"""The README's install paths, run end to end against ``cadre dev up --no-operator``: Helm 4
(the real engine, through helm-python-sdk) installs, upgrades and uninstalls charts/cadre;
``kubectl apply --server-side`` applies manifests/cadre.yaml and applies it again without a
write. Each time the operator runs from the Deployment the chart defines (the local kubelet
runs the operator image as a cluster would), becomes Ready, and a Team finishes a Task with
the scripted model, its lead's command run in a sandbox pod the operator made."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart.test_argocd_health import health
from tests.harness.conftest import ModelFactory, scripted, until  # noqa: F401 - fixture
from tests.localcluster.conftest import REPO, Http, for_pods
from tests.operator.conftest import SCRIPTED_ENDPOINTS, SCRIPTED_MODEL_ENDPOINTS

NAMESPACE = "cadre-system"
WORK = "work"


class DevCluster:
    def __init__(self, state: Path) -> None:
        self.kubeconfig = state / "kubeconfig"
        config = yaml.safe_load(self.kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        ca = state / "ca.crt"
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        self.http = Http(cluster["server"], ca, config["users"][0]["user"]["token"])

    def kubectl(self, *args: str, input: str | None = None) -> str:
        binary = shutil.which("kubectl")
        if binary is None:
            pytest.skip("kubectl is not installed on this machine")
        result = subprocess.run([binary, f"--kubeconfig={self.kubeconfig}", *args], input=input,
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, f"kubectl {' '.join(args)}:\n{result.stderr}"
        return result.stdout


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevCluster]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cadre.cli.main", "dev", "up", "--port", "0", "--state-dir",
         str(tmp_path / "dev"), "--crds", str(REPO / "crds"), "--no-operator"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("ready"), line
        yield DevCluster(tmp_path / "dev")
    finally:
        proc.send_signal(signal.SIGTERM)  # dev up stops every pod it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _scenario() -> dict[str, Any]:
    steps = [
        {"text": "Writing it.", "tool_uses": [{"name": "bash", "input": {
            "command": "echo shipped > result.txt && cat result.txt"}}]},
        {"choices": [{"when_last_result_contains": "shipped", "text": "Done: result.txt."},
                     {"text": "It failed."}]},
    ]  # fmt: skip
    return {"agents": {"lead": steps}}


def _work(model_url: str, task: str) -> str:
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": WORK}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "model", "namespace": WORK,
         "labels": {"cadre.dev/model-api-key": "true"}}, "stringData": {"api-key": "sk-test"}},
        {"apiVersion": "cadre.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "lead",
         "namespace": WORK}, "spec": {"role": "Does the work", "model": "claude-sonnet-4-6",
         "baseURL": for_pods(model_url), "apiKeySecretRef": {"name": "model"}, "tools": ["bash"]}},
        {"apiVersion": "cadre.dev/v1alpha1", "kind": "Team", "metadata": {"name": "crew",
         "namespace": WORK}, "spec": {"lead": "lead", "members": [{"agent": "lead"}]}},
        {"apiVersion": "cadre.dev/v1alpha1", "kind": "Task", "metadata": {"name": task,
         "namespace": WORK}, "spec": {"assignee": {"team": "crew"}, "prompt": "Ship it."}},
    ]  # fmt: skip
    return yaml.safe_dump_all(docs)


async def _task_succeeds(dev: DevCluster, model_url: str, task: str) -> None:
    await asyncio.to_thread(dev.kubectl, "apply", "-f", "-", input=_work(model_url, task))

    def phase() -> str:
        found = dev.http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{WORK}/tasks/{task}")
        status = found.json().get("status") or {}
        return str(status.get("phase", "")) if status.get("phase") in (
            "Succeeded", "Failed", "Cancelled") else ""  # fmt: skip

    ended = await until(phase, within=120)
    assert ended == "Succeeded"


def _rollout(dev: DevCluster) -> str:
    return dev.kubectl("rollout", "status", "deployment/cadre", "-n", NAMESPACE, "--timeout=90s")


async def test_helm_installs_upgrades_and_uninstalls_the_chart(
    dev: DevCluster,
    scripted: ModelFactory,  # noqa: F811 - the fixture
) -> None:
    url, model = await scripted(_scenario())
    config = helm.Config(kubeconfig_path=dev.kubeconfig, namespace=NAMESPACE)
    values = {"modelEndpoints": list(SCRIPTED_MODEL_ENDPOINTS)}
    try:
        release = await asyncio.to_thread(config.install, str(REPO / "charts" / "cadre"), "cadre",
                                          values, namespace=NAMESPACE, create_namespace=True,
                                          timeout=120, wait="watcher")  # fmt: skip
        assert release["status"] == "deployed"
        assert "successfully rolled out" in await asyncio.to_thread(_rollout, dev)
        await _task_succeeds(dev, url, "first")
        # An upgrade with a changed value rolls the operator's pod (Recreate) and it works on.
        upgraded = await asyncio.to_thread(
            config.upgrade, str(REPO / "charts" / "cadre"), "cadre",
            {**values, "logLevel": "debug"}, namespace=NAMESPACE, timeout=120, wait="watcher",
        )  # fmt: skip
        assert upgraded["revision"] == 2
        await asyncio.to_thread(_rollout, dev)
        deployment = dev.http("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/cadre")
        annotations = deployment.json()["metadata"]["annotations"]
        assert annotations["deployment.kubernetes.io/revision"] == "2"
        operations = {e["operation"] for e in deployment.json()["metadata"]["managedFields"]}
        assert "Apply" in operations  # Helm 4 applies server-side
        await asyncio.to_thread(dev.kubectl, "delete", "task", "first", "-n", WORK, "--wait")
        await _task_succeeds(dev, url, "second")
        await asyncio.to_thread(config.uninstall, "cadre", timeout=120,
                                wait="watcher")  # fmt: skip
        gone = dev.http("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/cadre")
        assert gone.status_code == 404
        pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
        assert await until(lambda: not dev.http("GET", pods).json()["items"], within=60)
    finally:
        with contextlib.suppress(helm.HelmError):
            config.close()
    assert model.requests  # the scripted model did the work


async def test_kubectl_applies_the_manifests_server_side_and_again_without_a_write(
    dev: DevCluster,
    scripted: ModelFactory,  # noqa: F811 - the fixture
) -> None:
    url, _ = await scripted(_scenario())
    manifests = str(REPO / "manifests" / "cadre.yaml")
    first = await asyncio.to_thread(dev.kubectl, "apply", "--server-side", "-f", manifests)
    assert "serverside-applied" in first
    # Settled first: the Deployment controller writes the Deployment's status as it rolls.
    assert "successfully rolled out" in await asyncio.to_thread(_rollout, dev)
    listed = await asyncio.to_thread(dev.kubectl, "get", "-f", manifests, "-o", "json")
    before = {(i["kind"], i["metadata"]["name"]): i["metadata"]["resourceVersion"]
              for i in json.loads(listed)["items"]}  # fmt: skip
    await asyncio.to_thread(dev.kubectl, "apply", "--server-side", "-f", manifests)
    listed = await asyncio.to_thread(dev.kubectl, "get", "-f", manifests, "-o", "json")
    after = {(i["kind"], i["metadata"]["name"]): i["metadata"]["resourceVersion"]
             for i in json.loads(listed)["items"]}  # fmt: skip
    assert after == before  # no object written again
    # The scripted model's endpoint is allowed as a user would: `kubectl set env`.
    await asyncio.to_thread(dev.kubectl, "set", "env", "deployment/cadre", "-n", NAMESPACE,
                            f"CADRE_MODEL_ENDPOINTS={SCRIPTED_ENDPOINTS}")  # fmt: skip
    assert "successfully rolled out" in await asyncio.to_thread(_rollout, dev)
    await _task_succeeds(dev, url, "applied")


async def test_argocd_syncs_server_side_and_its_health_checks_read_the_live_objects(
    dev: DevCluster,
    scripted: ModelFactory,  # noqa: F811 - the fixture
) -> None:
    url, _ = await scripted(_scenario())
    manifests = str(REPO / "manifests" / "cadre.yaml")
    # Argo CD's server-side sync: its own field manager, conflicts forced.
    sync = ("apply", "--server-side", "--force-conflicts", "--field-manager=argocd-controller",
            "-f", manifests)  # fmt: skip
    await asyncio.to_thread(dev.kubectl, *sync)
    await asyncio.to_thread(dev.kubectl, "set", "env", "deployment/cadre", "-n", NAMESPACE,
                            f"CADRE_MODEL_ENDPOINTS={SCRIPTED_ENDPOINTS}")  # fmt: skip
    await asyncio.to_thread(_rollout, dev)
    await _task_succeeds(dev, url, "synced")
    for kind, name in (("Agent", "lead"), ("Team", "crew"), ("Task", "synced")):
        path = f"/apis/cadre.dev/v1alpha1/namespaces/{WORK}/{kind.lower()}s/{name}"
        seen: list[tuple[str, str]] = []

        def healthy(path: str = path, kind: str = kind, seen: list[Any] = seen) -> bool:
            seen.append(health(kind, dev.http("GET", path).json()))
            return seen[-1][0] == "Healthy"

        assert await until(healthy, within=60), (kind, seen[-3:])
    # A later sync finds the Deployment's env changed by `kubectl set env` and takes it back,
    # as Argo CD's self-heal would; the field is then argocd-controller's again.
    await asyncio.to_thread(dev.kubectl, *sync)
    deployment = dev.http("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/cadre").json()
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}  # fmt: skip
    assert env["CADRE_MODEL_ENDPOINTS"] == "https://api.anthropic.com"
