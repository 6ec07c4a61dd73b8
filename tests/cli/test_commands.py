"""The user-facing commands (`cadre run`, `tree`, `approve`, `reject`, `memory`) against the
local cluster over HTTPS with the real client, with kubectl's options, and every error case
answered in one line with exit code 1 by the real `cadre` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cadre.cli.main import cli
from click.testing import CliRunner

from tests.localcluster.conftest import REPO, Http, Served, serving

NS = "default"
CADRE = f"/apis/cadre.dev/v1alpha1/namespaces/{NS}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("cli"), crd_dir=REPO / "crds") as served:
        yield served


def cadre(
    kubeconfig: Path | None, *args: str, input: str | None = None, process: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run ``cadre ARGS --kubeconfig=...``: in this process through click's runner (the real
    client, real sockets; quick), or as its own process (the entry point itself)."""
    options = [f"--kubeconfig={kubeconfig}"] if kubeconfig else []
    if process:
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        return subprocess.run(
            [sys.executable, "-m", "cadre.cli.main", *args, *options],
            env=env, input=input, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    result = CliRunner().invoke(cli, [*args, *options], input=input, env={"KUBECONFIG": None})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def task(http: Http, name: str, status: dict[str, Any] | None = None, **spec: Any) -> None:
    body = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"assignee": {"agent": "engineer"}, "prompt": "p", **spec}}  # fmt: skip
    assert http("POST", f"{CADRE}/tasks", body).status_code == 201
    if status is not None:
        patched = http("PATCH", f"{CADRE}/tasks/{name}/status", {"status": status},
                       content_type="application/merge-patch+json")  # fmt: skip
        assert patched.status_code == 200, patched.text


def test_tree_shows_a_delegation_tree_as_table_json_and_yaml(cluster: Served) -> None:
    http, kubeconfig = cluster.http, cluster.kubeconfig
    usage = {"turns": 3, "inputTokens": 1000, "outputTokens": 200, "costUSD": "0.0060"}
    task(http, "root", {"phase": "Succeeded", "agent": "lead", "usage": usage,
                        "startTime": "2026-01-01T00:00:00Z",
                        "completionTime": "2026-01-01T00:01:30Z"})  # fmt: skip
    task(http, "child", {"phase": "Succeeded", "agent": "engineer", "review": {"deliveries": 2}},
         parentRef={"name": "root"})  # fmt: skip
    shown = cadre(kubeconfig, "tree", "root")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["TASK", "AGENT", "PHASE", "TURNS", "TOKENS", "COST", "DURATION",
                                "REVIEWS"]  # fmt: skip
    assert lines[1].split()[:6] == ["root", "lead", "Succeeded", "3", "1,200", "$0.0060"]
    assert lines[1].split()[6] == "1m30s"
    assert lines[2].split()[:3] == ["└─", "child", "engineer"]
    assert lines[2].split()[-1] == "2"
    assert lines[3].split()[:4] == ["TOTAL", "3", "1,200", "$0.0060"]
    data = json.loads(cadre(kubeconfig, "tree", "root", "-o", "json").stdout)
    assert [(d["task"], d["depth"], d["tokens"]) for d in data] == [("root", 0, 1200),
                                                                     ("child", 1, 0)]  # fmt: skip
    assert yaml.safe_load(cadre(kubeconfig, "tree", "root", "-o", "yaml").stdout) == data


def test_approve_and_reject_write_the_verdict_only_when_one_is_awaited(
    cluster: Served,
) -> None:
    http, kubeconfig = cluster.http, cluster.kubeconfig
    review = {"humanApproval": True}
    task(http, "gated", {"phase": "InReview"}, review=review)
    rejected = cadre(kubeconfig, "reject", "gated", "--feedback", "Add a changelog entry.")
    assert rejected.returncode == 0, rejected.stderr
    assert rejected.stdout.strip() == "task/gated rejected"
    spec = http("GET", f"{CADRE}/tasks/gated").json()["spec"]
    assert spec["approval"] == {"decision": "Rejected", "feedback": "Add a changelog entry."}
    approved = cadre(kubeconfig, "approve", "gated")
    assert approved.returncode == 0, approved.stderr
    assert http("GET", f"{CADRE}/tasks/gated").json()["spec"]["approval"]["decision"] == "Approved"

    task(http, "ungated", {"phase": "InReview"})
    refused = cadre(kubeconfig, "approve", "ungated")
    assert refused.returncode == 1
    assert "Task ungated does not ask for human approval" in refused.stderr
    task(http, "early", {"phase": "Running"}, review=review)
    assert "Task early is Running, not InReview" in cadre(kubeconfig, "approve", "early").stderr
    task(http, "over", {"phase": "Succeeded"}, review=review)
    assert "Task over already ended Succeeded" in cadre(kubeconfig, "approve", "over").stderr
    assert "approval" not in http("GET", f"{CADRE}/tasks/ungated").json()["spec"]
    missing = cadre(kubeconfig, "reject", "gated")  # --feedback is required
    assert missing.returncode == 2
    assert "--feedback" in missing.stderr


MEMORY = yaml.safe_dump([
    {"text": "Run the tests before answering.", "created": "2026-01-02T00:00:00Z", "uses": 3},
    {"text": "Prefer the standard library.", "created": "2026-01-03T00:00:00Z", "uses": 0},
])  # fmt: skip


def test_memory_show_and_clear(cluster: Served) -> None:
    http, kubeconfig = cluster.http, cluster.kubeconfig
    config = {"metadata": {"name": "memory-engineer"}, "data": {"entries.yaml": MEMORY}}
    assert http("POST", f"/api/v1/namespaces/{NS}/configmaps", config).status_code == 201
    shown = cadre(kubeconfig, "memory", "show", "engineer")
    assert shown.returncode == 0, shown.stderr
    first, second = shown.stdout.splitlines()
    assert first.endswith("Run the tests before answering.")  # most used first
    assert second.endswith("Prefer the standard library.")
    data = json.loads(cadre(kubeconfig, "memory", "show", "engineer", "-o", "json").stdout)
    assert [e["uses"] for e in data] == [3, 0]
    refused = cadre(kubeconfig, "memory", "clear", "engineer", input="n\n")
    assert refused.returncode == 1
    assert "Forget 2 entries of Agent engineer?" in refused.stdout
    assert "Prefer" in http("GET", f"/api/v1/namespaces/{NS}/configmaps/memory-engineer").json()[
        "data"]["entries.yaml"]  # fmt: skip
    cleared = cadre(kubeconfig, "memory", "clear", "engineer", "--yes")
    assert cleared.returncode == 0, cleared.stderr
    assert "cleared (2 entries)" in cleared.stdout
    after = cadre(kubeconfig, "memory", "show", "engineer")
    assert after.stdout.strip() == "Agent engineer remembers nothing yet."


def test_memory_that_was_edited_into_nonsense_is_named(cluster: Served) -> None:
    http, kubeconfig = cluster.http, cluster.kubeconfig
    config = {"metadata": {"name": "memory-broken"}, "data": {"entries.yaml": "a: [unclosed"}}
    assert http("POST", f"/api/v1/namespaces/{NS}/configmaps", config).status_code == 201
    shown = cadre(kubeconfig, "memory", "show", "broken")
    assert shown.returncode == 1
    assert "configmap/memory-broken line 1: not valid YAML" in shown.stderr


def test_run_no_follow_creates_a_task_with_a_generated_name(cluster: Served) -> None:
    http, kubeconfig = cluster.http, cluster.kubeconfig
    created = cadre(kubeconfig, "run", "--team", "platform", "--no-follow", "Ship it.")
    assert created.returncode == 0, created.stderr
    name = created.stdout.strip().removeprefix("task/").removesuffix(" created")
    assert name.startswith("run-")
    stored = http("GET", f"{CADRE}/tasks/{name}").json()["spec"]
    assert stored == {**stored, "assignee": {"team": "platform"}, "prompt": "Ship it."}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["tree", "nothing"], 1, 'Error: Task "nothing" not found in namespace "default"'),
        (["approve", "nothing", "-n", "team-a"], 1,
         'Task "nothing" not found in namespace "team-a"'),
        (["memory", "show", "nobody"], 1,
         'the memory of Agent "nobody" (configmap/memory-nobody) not found'),
        (["run", "--agent", "a", "--team", "t", "x"], 2, "give exactly one of --agent and --team"),
        (["run", "--agent", "a", " "], 2, "the prompt is empty"),
        (["run", "--agent", "a", "--name", "Bad_Name", "--no-follow", "x"], 1, "Bad_Name"),
        (["tree", "x", "-o", "xml"], 2, "'xml' is not one of 'table', 'json', 'yaml'"),
    ],
)  # fmt: skip
def test_errors_name_what_is_wrong(
    cluster: Served, args: list[str], code: int, message: str
) -> None:
    kubeconfig = cluster.kubeconfig
    result = cadre(kubeconfig, *args, process=True)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_no_cluster_reachable_is_one_line(tmp_path: Path, cluster: Served) -> None:
    kubeconfig = cluster.kubeconfig
    config = yaml.safe_load(kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # nothing listens
    dead = tmp_path / "dead"
    dead.write_text(yaml.safe_dump(config))
    result = cadre(dead, "tree", "root", process=True)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot reach the cluster at https://127.0.0.1:9")
    assert "Traceback" not in result.stderr
    missing = cadre(tmp_path / "absent", "tree", "root")
    assert missing.returncode == 1
    assert "no usable kubeconfig" in missing.stderr
