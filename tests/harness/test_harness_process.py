"""``cadre harness`` for one Agent against the local cluster, with least-privilege RBAC, the
scripted model and a sandbox built by the operator's builders (the test plays the operator)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from cadre.api.agent import Sandbox
from cadre.api.names import MODEL_BASE_URL_ENV
from cadre.harness import taskapi
from cadre.harness.logs import TRANSCRIPT
from cadre.harness.process import HarnessProcess
from cadre.harness.taskapi import TaskApi
from cadre.harness.tokens import session_token
from cadre.operator.sandbox_builders import (
    SandboxDefaults,
    SandboxTarget,
    build_sandbox_objects,
    build_sandbox_service_account,
)
from cadre.sandbox.store import read_journal

from tests.harness.conftest import ModelFactory, lesson_requests, until, work_requests
from tests.localcluster.conftest import REPO, Http, Served, create_all, serving

NS = "default"
RBAC = "rbac.authorization.k8s.io"
DEFAULTS = SandboxDefaults(image="ghcr.io/cadre-dev/sandbox:test")
WRITE_SLUG = {"path": "slug.py", "content": "def slugify(t):\n    return t.lower()\n"}
SCENARIO = {
    "agents": {
        "engineer": [
            {"choices": [
                {"when_last_result_contains": "never", "text": "x"},
                {"text": "Writing it.", "tool_uses": [{"name": "write", "input": WRITE_SLUG}]},
            ]},
            {"text": "slug.py is written."},
        ]
    }
}  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Served]:
    with serving(
        tmp_path, crd_dir=REPO / "crds", kubelet_dir=tmp_path / "node",
        kubelet_options={"backoff": 0.2},
    ) as served:  # fmt: skip
        yield served


def _least_privilege_client(
    http: Http, server_url: str, ca: Path, tmp_path: Path
) -> kubernetes.client.ApiClient:
    """A client with only the harness's rights: its Agent, Tasks, Policies (list) and
    tasks/status."""
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/default"
    http(
        "POST",
        f"/api/v1/namespaces/{NS}/serviceaccounts",
        {"metadata": {"name": "harness-engineer"}},
    )
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "harness-engineer"},
        "rules": [
            {
                "apiGroups": ["cadre.dev"],
                "resources": ["agents"],
                "resourceNames": ["engineer"],
                "verbs": ["get"],
            },
            {"apiGroups": ["cadre.dev"], "resources": ["tasks"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["cadre.dev"], "resources": ["policies"], "verbs": ["list"]},
            {
                "apiGroups": ["cadre.dev"],
                "resources": ["tasks/status"],
                "verbs": ["get", "patch", "update"],
            },
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "harness-engineer"},
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "harness-engineer"},
        "subjects": [{"kind": "ServiceAccount", "name": "harness-engineer", "namespace": NS}],
    }  # fmt: skip
    assert http("POST", f"{rbac}/roles", role).status_code == 201
    assert http("POST", f"{rbac}/rolebindings", binding).status_code == 201
    token = http(
        "POST", f"/api/v1/namespaces/{NS}/serviceaccounts/harness-engineer/token", {"spec": {}}
    ).json()["status"]["token"]
    ca_data = base64.b64encode(ca.read_bytes()).decode()
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "h",
        "clusters": [
            {"name": "c", "cluster": {"server": server_url, "certificate-authority-data": ca_data}}
        ],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "h", "context": {"cluster": "c", "user": "u", "namespace": NS}}],
    }  # fmt: skip
    path = tmp_path / "harness-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return kubernetes.config.new_client_from_config(str(path))


async def _play_operator(http: Http, stop: asyncio.Event) -> list[str]:
    """What the operator will do: build the sandbox a Task asks for, report where it is."""
    built: list[str] = []
    http("POST", f"/api/v1/namespaces/{NS}/serviceaccounts", build_sandbox_service_account(NS))
    while not stop.is_set():
        tasks = (
            await asyncio.to_thread(http, "GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks")
        ).json()["items"]
        for task in tasks:
            name = task["metadata"]["name"]
            session = (task.get("status") or {}).get("session") or {}
            if not session.get("sandboxRequested") or session.get("sandboxReady"):
                continue
            if name not in built:
                target = SandboxTarget(
                    NS,
                    name,
                    task["metadata"]["uid"],
                    "engineer",
                    Sandbox(),
                    session["sandboxTokenSHA256"],
                )
                objects = build_sandbox_objects(target, DEFAULTS)
                await asyncio.to_thread(create_all, http, NS, objects)
                built.append(name)
            pod = (
                await asyncio.to_thread(http, "GET", f"/api/v1/namespaces/{NS}/pods/sbx-{name}")
            ).json()
            ready = any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in pod.get("status", {}).get("conditions", [])
            )
            if ready:
                status = {
                    "session": {
                        "sandboxReady": True,
                        "sandboxPod": f"sbx-{name}",
                        "sandboxAddress": f"{pod['status']['podIP']}:8080",
                    }
                }
                await asyncio.to_thread(
                    http,
                    "PATCH",
                    f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks/{name}/status",
                    {"status": status},
                    "application/merge-patch+json",
                )
        await asyncio.sleep(0.1)
    return built


def _agent(tools: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "role": "Writes code",
        "model": "claude-sonnet-4-6",
        "apiKeySecretRef": {"name": "anthropic"},
    }
    if tools is not None:
        spec["tools"] = tools
    return {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "engineer"},
        "spec": spec,
    }


def _task(name: str, prompt: str) -> dict[str, Any]:
    return {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": name},
        "spec": {"assignee": {"agent": "engineer"}, "prompt": prompt},
    }


async def test_the_harness_works_its_tasks_with_a_lazy_sandbox(
    cluster: Served,
    scripted: ModelFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=TRANSCRIPT.name)
    handle, http = cluster.handle, cluster.http
    assert handle.server is not None
    url, model = await scripted(
        SCENARIO | {"agents": {**SCENARIO["agents"], "engineer": SCENARIO["agents"]["engineer"]}}
    )
    agent = _agent()
    agent["spec"]["baseURL"] = url
    agent["spec"]["limits"] = {"maxCostUSD": "1.00", "timeout": "1h"}
    assert (
        http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/agents", agent).status_code == 201
    )
    task = _task("slugify", "Write slug.py.")
    # A Task may narrow its Agent's limits, never widen them.
    task["spec"]["limits"] = {"maxCostUSD": "99999", "timeout": "30m", "maxTurns": 50}
    http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks", task)
    client = _least_privilege_client(http, handle.server.url, tmp_path / "ca.crt", tmp_path)
    stop = asyncio.Event()
    harness = HarnessProcess(
        "engineer", TaskApi(client, NS), tmp_path / "harness", "sk-test",
        sandbox_wait_seconds=60, base_url=url,
    )  # fmt: skip
    operator = asyncio.get_running_loop().create_task(_play_operator(http, stop))
    running = asyncio.get_running_loop().create_task(harness.run(stop))
    try:

        def finished() -> dict[str, Any] | None:
            task = http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks/slugify").json()
            return (
                task if (task.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None
            )

        task = await until(finished, within=60)
    finally:
        stop.set()
        await running
        built = await operator
        client.close()
    status = task["status"]
    assert status["phase"] == "Succeeded", json.dumps(status)
    assert status["result"]["summary"] == "slug.py is written."
    assert status["usage"]["turns"] == 2
    assert status["limits"] == {"maxCostUSD": "1.00", "timeout": "30m", "maxTurns": 50}
    key = (tmp_path / "harness" / "token.key").read_bytes()
    token = session_token(key, task["metadata"]["uid"])
    assert status["session"]["sandboxTokenSHA256"] == hashlib.sha256(token.encode()).hexdigest()
    assert status["conditions"][0]["type"] == "Succeeded"
    assert built == ["slugify"]
    assert len(work_requests(model.requests)) == 2
    assert len(lesson_requests(model.requests)) == 1
    assert handle.kubelet is not None  # the file is on the sandbox's workspace volume
    written = list(
        (handle.kubelet.state_dir / "claims" / NS).glob("sbx-slugify-workspace-*/slug.py")
    )
    assert [p.read_text() for p in written] == ["def slugify(t):\n    return t.lower()\n"]
    said = [r.getMessage() for r in caplog.records if r.name == TRANSCRIPT.name]
    assert f"[{NS}/slugify] engineer: slug.py is written." in said


LAZY_AND_CANCEL = {
    "agents": {
        "engineer": [
            {"choices": [
                {"when_prompt_contains": "Say hello", "text": "Hello."},
                {"when_prompt_contains": "Think", "text": "Still thinking.", "delay_seconds": 60},
            ]},
        ]
    }
}  # fmt: skip


async def test_no_tool_call_means_no_sandbox_and_cancel_stops_a_session(
    cluster: Served, scripted: ModelFactory, tmp_path: Path
) -> None:
    handle, http = cluster.handle, cluster.http
    assert handle.server is not None
    url, _ = await scripted(LAZY_AND_CANCEL)
    # The Agent's spec names another endpoint (changed after the operator approved ``url``):
    # the harness uses only the endpoint it was started with, so the key never goes there.
    elsewhere, other = await scripted(LAZY_AND_CANCEL)
    agent = _agent()
    agent["spec"]["baseURL"] = elsewhere
    http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/agents", agent)
    http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks", _task("hello", "Say hello."))
    http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks", _task("ponder", "Think hard."))
    client = _least_privilege_client(http, handle.server.url, tmp_path / "ca.crt", tmp_path)
    stop = asyncio.Event()
    harness = HarnessProcess(
        "engineer", TaskApi(client, NS), tmp_path / "harness", "sk-test", base_url=url
    )
    running = asyncio.get_running_loop().create_task(harness.run(stop))

    def phase(name: str) -> str | None:
        task = http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks/{name}").json()
        return (task.get("status") or {}).get("phase")

    try:
        await until(lambda: phase("hello") == "Succeeded")
        await until(lambda: phase("ponder") == "Running")
        await asyncio.sleep(0.3)  # the model call is in flight
        began = asyncio.get_running_loop().time()
        http(
            "PATCH",
            f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks/ponder",
            {"spec": {"cancel": True}},
            "application/merge-patch+json",
        )
        await until(lambda: phase("ponder") == "Cancelled")
        took = asyncio.get_running_loop().time() - began
    finally:
        stop.set()
        await running
        client.close()
    assert took < 5
    assert other.requests == []
    hello = http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks/hello").json()["status"]
    assert not hello["session"].get("sandboxRequested")
    assert hello["result"]["summary"] == "Hello."
    ponder = http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks/ponder").json()["status"]
    assert ponder["conditions"][0]["reason"] == "Cancelled"
    logs = list((tmp_path / "harness" / "sessions" / NS).glob("ponder-*.jsonl"))
    assert json.loads(logs[0].read_text().splitlines()[-1])["outcome"] == "Cancelled"


async def test_a_session_failed_by_a_long_api_outage_is_taken_up_again(
    cluster: Served, scripted: ModelFactory, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Status writes fail for longer than the client tries them again (RETRY_SECONDS, cut to
    0.5 s here): the session fails, and no later event of its Task would restart it. The
    harness takes it up again after a backoff, from its log, and the Task still succeeds."""
    monkeypatch.setattr(taskapi, "RETRY_SECONDS", 0.5)
    handle, http = cluster.handle, cluster.http
    server = handle.server
    assert server is not None
    url, _ = await scripted(LAZY_AND_CANCEL)
    agent = _agent()
    agent["spec"]["baseURL"] = url
    http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/agents", agent)
    client = _least_privilege_client(http, server.url, tmp_path / "ca.crt", tmp_path)
    outage = handle.call(server.faults.inject, "patch", "tasks", 503, 4, "status")
    http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks", _task("hello", "Say hello."))
    stop = asyncio.Event()
    harness = HarnessProcess(
        "engineer", TaskApi(client, NS), tmp_path / "harness", "sk-test", base_url=url
    )
    running = asyncio.get_running_loop().create_task(harness.run(stop))

    def status() -> dict[str, Any]:
        task = http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks/hello").json()
        return dict(task.get("status") or {})

    try:
        await until(lambda: status().get("phase") == "Succeeded", within=60)
    finally:
        stop.set()
        await running
        client.close()
    assert outage.served == 4
    assert harness.failures == {}  # a success clears the count
    assert status()["result"]["summary"] == "Hello."


def _append(name: str, step: int) -> str:
    return f"sleep 0.1; echo {name}-{step} >> done.txt"


def _steps_scenario(tasks: list[str], steps: int) -> dict[str, Any]:
    script: list[dict[str, Any]] = []
    for step in range(steps):
        script.append({"choices": [
            {"when_prompt_contains": f"Task {name}.", "text": f"{name} step {step}",
             "tool_uses": [{"name": "bash", "input": {"command": _append(name, step)}}]}
            for name in tasks
        ]})  # fmt: skip
    script.append({"text": "All done."})
    return {"agents": {"engineer": script}}


async def test_killing_the_harness_with_three_sessions_in_flight_loses_and_repeats_nothing(
    cluster: Served, scripted: ModelFactory, tmp_path: Path
) -> None:
    handle, http = cluster.handle, cluster.http
    assert handle.server is not None
    assert handle.kubelet is not None
    names, steps = ["alpha", "beta", "gamma"], 4
    url, _ = await scripted(_steps_scenario(names, steps))
    agent = _agent()
    agent["spec"]["baseURL"] = url
    http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/agents", agent)
    for name in names:
        http(
            "POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks", _task(name, f"Task {name}.")
        )
    client = _least_privilege_client(http, handle.server.url, tmp_path / "ca.crt", tmp_path)
    client.close()
    stop = asyncio.Event()
    operator = asyncio.get_running_loop().create_task(_play_operator(http, stop))
    state = tmp_path / "harness"
    kubeconfig = tmp_path / "harness-kubeconfig"
    rng = random.Random(11)
    kills = 0

    def phases() -> dict[str, str | None]:
        items = http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks").json()["items"]
        return {t["metadata"]["name"]: (t.get("status") or {}).get("phase") for t in items}

    def logged() -> int:
        return sum(len(p.read_bytes().splitlines()) for p in state.glob("sessions/*/*.jsonl"))

    try:
        for _ in range(60):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cadre.cli.main", "harness", "--agent", "engineer",
                # No events server: outside a pod it would bind 0.0.0.0:8090, which another
                # local cluster's harness pods (127.1.x.y:8090) make unavailable.
                "--namespace", NS, "--state-dir", str(state), "--events-port", "0",
                env={**os.environ, "KUBECONFIG": str(kubeconfig), "ANTHROPIC_API_KEY": "sk-test",
                     MODEL_BASE_URL_ENV: url},
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            start, target = logged(), rng.randint(4, 14)
            deadline = asyncio.get_running_loop().time() + 60
            while proc.returncode is None and logged() < start + target:
                if all(p == "Succeeded" for p in phases().values()):
                    break
                # A harness that makes no progress fails the test instead of hanging it.
                assert asyncio.get_running_loop().time() < deadline, "the harness stalled"
                await asyncio.sleep(0.01)
            if all(p == "Succeeded" for p in (await asyncio.to_thread(phases)).values()):
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
                break
            # It may have ended by itself between the check and the kill: that is a stop too.
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL)
            await proc.wait()
            kills += 1
    finally:
        stop.set()
        await operator
    assert kills >= 4
    assert set(phases().values()) == {"Succeeded"}
    for name in names:
        workspaces = list(
            (handle.kubelet.state_dir / "claims" / NS).glob(f"sbx-{name}-workspace-*")
        )
        assert len(workspaces) == 1, workspaces  # one workspace, kept across sandbox restarts
        lines = (workspaces[0] / "done.txt").read_text().split()
        assert lines == [f"{name}-{step}" for step in range(steps)]  # every effect exactly once
        journal = read_journal(workspaces[0] / ".cadre-sandbox" / "executions.jsonl")
        ids = [entry["tool_use_id"] for entry in journal]
        assert len(ids) == len(set(ids)) == steps
