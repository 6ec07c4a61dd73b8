"""The operator (``cadre operator``, a real kopf process) against the local cluster: an Agent
becomes a running harness pod, a Task runs to Succeeded through it with a sandbox pod built on
request, and the sandbox goes when the Task ends. The model is the scripted one."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import requests
from cadre.api.names import MODEL_ENDPOINTS_ENV
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.conftest import ModelFactory, until, work_requests
from tests.localcluster.conftest import Served, for_pods
from tests.operator.conftest import (
    LIVENESS_PORT,
    METRICS_PORT,
    NS,
    SCRIPTED_ENDPOINTS,
    create_agent,
    create_task,
    ended,
    model_key_secret,
)

WRITE = {"path": "hello.py", "content": "print('hello')\n"}
RUN = {"command": "python3 hello.py"}
SCENARIO = {
    "agents": {
        "engineer": [
            {"text": "Writing it.", "tool_uses": [{"name": "write", "input": WRITE}]},
            {"text": "Running it.", "tool_uses": [{"name": "bash", "input": RUN}]},
            {
                "choices": [
                    {"when_last_result_contains": "hello", "text": "hello.py prints hello."},
                    {"text": "It failed."},
                ]
            },
        ]
    }
}


async def test_a_task_runs_to_succeeded_through_the_harness_and_a_sandbox(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory, tmp_path: Path,
) -> None:  # fmt: skip
    http = cluster.http
    url, model = await scripted(SCENARIO)
    create_agent(http, url)

    def agent_ready() -> bool:
        status = (
            http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/agents/engineer")
            .json()
            .get("status")
            or {}
        )
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )

    await until(agent_ready)
    create_task(http, "hello", "Write hello.py and run it.")
    done = await until(lambda: ended(http, "hello"), within=90)
    status = done["status"]
    assert status["phase"] == "Succeeded", (status, (tmp_path / "operator.log").read_text()[-3000:])
    assert status["result"]["summary"] == "hello.py prints hello."
    assert status["agent"] == "engineer"
    assert {c["type"] for c in status["conditions"]} >= {"Accepted", "Succeeded"}
    assert len(work_requests(model.requests)) == 3
    await until(lambda: http("GET", f"/api/v1/namespaces/{NS}/pods/sbx-hello").status_code == 404)
    assert (
        http("GET", f"/api/v1/namespaces/{NS}/pods/harness-engineer-0").json()["status"]["phase"]
        == "Running"
    )

    def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = requests.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    succeeded = ("cadre_tasks", (("agent", "engineer"), ("namespace", NS), ("phase", "Succeeded"),
                                 ("team", "")))  # fmt: skip
    samples = await until(lambda: (found := scraped()).get(succeeded) == 1 and found)
    tokens = {labels: v for (name, labels), v in samples.items() if name == "cadre_tokens_total"}
    assert sum(tokens.values()) > 0
    assert all(dict(labels)["model"] == "claude-sonnet-4-6" for labels in tokens)
    assert samples[("cadre_sandbox_start_seconds_count", ())] == 1
    # The queue drained: nothing Pending for the Agent.
    assert samples[("cadre_queue_depth", (("agent", "engineer"), ("namespace", NS)))] == 0
    duration = (
        "cadre_task_duration_seconds_count",
        (("agent", "engineer"), ("outcome", "Succeeded")),
    )
    assert samples[duration] == 1
    ended_tasks = (
        "cadre_tasks_ended_total",
        (("agent", "engineer"), ("phase", "Succeeded"), ("reason", "Completed")),
    )
    assert samples[ended_tasks] == 1
    assert samples[("cadre_session_compactions_total", (("agent", "engineer"),))] == 0
    events = http("GET", f"/api/v1/namespaces/{NS}/events").json()["items"]
    reasons = {(e["involvedObject"]["kind"], e["reason"]) for e in events}
    assert {("Task", "Accepted"), ("Task", "SandboxCreated"), ("Task", "SandboxDeleted")} <= reasons
    assert ("Agent", "HarnessReconciled") in reasons
    live = await asyncio.to_thread(
        requests.get, f"http://127.0.0.1:{LIVENESS_PORT}/healthz", timeout=10
    )
    assert live.status_code == 200


RECOVERY = {
    "agents": {
        "engineer": [
            {
                "text": "Taking notes.",
                "tool_uses": [
                    {"name": "write", "input": {"path": "notes.txt", "content": "remember me"}}
                ],
            },
            {
                "text": "Reading them back.",
                "delay_seconds": 2,
                "tool_uses": [{"name": "bash", "input": {"command": "cat notes.txt"}}],
            },
            {
                "choices": [
                    {"when_last_result_contains": "remember me", "text": "The notes survived."},
                    {"text": "The notes are gone."},
                ]
            },
        ]
    }
}


async def test_a_sandbox_pod_deleted_mid_task_comes_back_with_its_workspace(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory, tmp_path: Path,
) -> None:  # fmt: skip
    http = cluster.http
    url, model = await scripted(RECOVERY)
    create_agent(http, url)
    create_task(http, "notes", "Take notes, then read them.")
    await until(lambda: len(model.requests) >= 2)  # the notes are written; the model is thinking
    first = http("GET", f"/api/v1/namespaces/{NS}/pods/sbx-notes").json()["metadata"]["uid"]
    http("DELETE", f"/api/v1/namespaces/{NS}/pods/sbx-notes", {"gracePeriodSeconds": 0})

    done = await until(lambda: ended(http, "notes"), within=90)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["result"]["summary"] == "The notes survived."
    second = work_requests(model.requests)[-1]
    assert "remember me" in json.dumps(second["messages"][-1])
    assert first  # the pod that was deleted; a new one served the last call


RESUME = {
    "agents": {
        "engineer": [
            {
                "text": "Step one.",
                "tool_uses": [{"name": "bash", "input": {"command": "echo one >> log.txt"}}],
            },
            {
                "text": "Step two.",
                "delay_seconds": 3,
                "tool_uses": [
                    {"name": "bash", "input": {"command": "echo two >> log.txt; cat log.txt"}}
                ],
            },
            {
                "choices": [
                    {"when_last_result_contains": "one\ntwo", "text": "Both steps ran once."},
                    {"text": "Something repeated."},
                ]
            },
        ]
    }
}


async def test_the_harness_pod_deleted_mid_task_comes_back_and_resumes(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory, tmp_path: Path,
) -> None:  # fmt: skip
    http, kubeconfig = cluster.http, cluster.kubeconfig
    url, model = await scripted(RESUME)
    create_agent(http, url)
    create_task(http, "steps", "Do both steps.")
    await until(lambda: len(model.requests) >= 2)  # step one ran; the model is thinking
    http("DELETE", f"/api/v1/namespaces/{NS}/pods/harness-engineer-0", {"gracePeriodSeconds": 0})
    result = await asyncio.create_subprocess_exec(
        "kubectl", f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path / 'kcache'}",
        "wait", "task/steps", "-n", NS, "--for=condition=Succeeded", "--timeout=90s",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await result.communicate()
    assert result.returncode == 0, err.decode()
    status = http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks/steps").json()["status"]
    assert status["result"]["summary"] == "Both steps ran once."
    assert status["session"]["resumes"] >= 1


async def test_an_agent_waits_for_its_secret_and_recovers_by_itself(
    cluster: Served, operator: asyncio.subprocess.Process
) -> None:
    http = cluster.http
    agent = {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "patient"},
        "spec": {"role": "r", "model": "claude-sonnet-4-6", "apiKeySecretRef": {"name": "later"}},
    }
    http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/agents", agent)

    def ready() -> dict[str, Any] | None:
        status = (
            http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/agents/patient")
            .json()
            .get("status")
            or {}
        )
        return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)

    waiting = await until(lambda: (c := ready()) and c["reason"] == "SecretMissing" and c)
    assert waiting["status"] == "False"
    assert 'the Secret "later" with the API key does not exist' in waiting["message"]
    assert (
        http("GET", f"/apis/apps/v1/namespaces/{NS}/statefulsets/harness-patient").status_code
        == 404
    )
    warnings = [
        e
        for e in http("GET", f"/api/v1/namespaces/{NS}/events").json()["items"]
        if e["reason"] == "SecretMissing"
    ]
    assert warnings
    assert warnings[0]["type"] == "Warning"
    http(
        "POST",
        f"/api/v1/namespaces/{NS}/secrets",
        model_key_secret("later", "sk"),
    )
    await until(lambda: (c := ready()) and c["status"] == "True")
    http("DELETE", f"/api/v1/namespaces/{NS}/secrets/later")
    await until(lambda: (c := ready()) and c["reason"] == "SecretMissing")


async def test_the_operator_killed_mid_flight_restarts_and_every_task_finishes_once(
    cluster: Served,
    scripted: ModelFactory,
    tmp_path: Path,
) -> None:
    handle, http, kubeconfig = cluster.handle, cluster.http, cluster.kubeconfig
    assert handle.kubelet is not None
    count = 20
    steps = [
        {
            "text": "Working.",
            "tool_uses": [{"name": "bash", "input": {"command": "echo done >> once.txt"}}],
        },
        {"text": "Finished.", "delay_seconds": 0.5},
    ]
    url, _ = await scripted({"agents": {"engineer": steps}})
    http(
        "POST",
        f"/api/v1/namespaces/{NS}/secrets",
        model_key_secret("anthropic", "sk"),
    )
    spec = {
        "role": "r",
        "model": "claude-sonnet-4-6",
        "baseURL": for_pods(url),
        "apiKeySecretRef": {"name": "anthropic"},
        "maxConcurrentTasks": count,
        "sandbox": {"workspace": {"retention": "Retain"}},  # kept, so the test can read them
    }
    http(
        "POST",
        f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/agents",
        {
            "apiVersion": "cadre.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "engineer"},
            "spec": spec,
        },
    )
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "CADRE_HARNESS_IMAGE": "ghcr.io/cadre-dev/cadre:t",
        "CADRE_SANDBOX_IMAGE": "ghcr.io/cadre-dev/sandbox:t",
        MODEL_ENDPOINTS_ENV: SCRIPTED_ENDPOINTS,
    }

    async def start() -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cadre.cli.main", "operator", "--namespace", NS, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

    def phases() -> list[str | None]:
        items = http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks").json()["items"]
        return [(t.get("status") or {}).get("phase") for t in items]

    operator = await start()
    for i in range(count):
        task = {
            "apiVersion": "cadre.dev/v1alpha1",
            "kind": "Task",
            "metadata": {"name": f"t{i}"},
            "spec": {"assignee": {"agent": "engineer"}, "prompt": f"Task {i}."},
        }
        http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks", task)
    kills = 0
    try:
        for delay in (1.5, 1.0, 1.5):
            await asyncio.sleep(delay)
            operator.kill()
            await operator.wait()
            kills += 1
            await asyncio.sleep(0.3)  # nobody reconciles for a moment
            operator = await start()
        await until(lambda: phases().count("Succeeded") == count, within=120)
        # The operator deletes a finished Task's sandbox: it must still run while they go.
        await until(lambda: not [
            p for p in http("GET", f"/api/v1/namespaces/{NS}/pods").json()["items"]
            if p["metadata"]["name"].startswith("sbx-")])  # fmt: skip
    finally:
        operator.terminate()
        await operator.wait()
    assert kills == 3
    claims = handle.kubelet.state_dir / "claims" / NS
    for i in range(count):
        files = list(claims.glob(f"sbx-t{i}-workspace-*/once.txt"))
        assert [f.read_text() for f in files] == ["done\n"], i  # one sandbox, one run each


async def test_a_task_for_a_missing_agent_says_so_and_is_taken_once_it_exists(
    cluster: Served, operator: asyncio.subprocess.Process
) -> None:
    http = cluster.http
    task = {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "orphan"},
        "spec": {"assignee": {"agent": "nobody"}, "prompt": "Anyone?"},
    }
    http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks", task)

    def accepted() -> dict[str, Any] | None:
        status = (
            http("GET", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks/orphan")
            .json()
            .get("status")
            or {}
        )
        return next((c for c in status.get("conditions", []) if c["type"] == "Accepted"), None)

    missing = await until(accepted)
    assert (missing["status"], missing["reason"]) == ("False", "AgentNotFound")
    assert 'the Agent "nobody" does not exist' in missing["message"]
    agent = {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "nobody"},
        "spec": {"role": "r", "model": "claude-sonnet-4-6", "apiKeySecretRef": {"name": "x"}},
    }
    http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/agents", agent)
    taken = await until(lambda: (c := accepted()) and c["status"] == "True" and c)
    assert taken["reason"] == "AgentAssigned"
