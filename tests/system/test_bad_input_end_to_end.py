"""Bad input end to end, as a user meets it with kubectl: the demo's own manifests, broken one
field at a time, are refused by `kubectl apply` with the CRD's message naming the field, and
the stored object is left as it was; a Task naming an Agent that does not exist ends up with a
condition that says so (and `kubectl wait` can wait for it)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.localcluster.conftest import REPO, Served
from tests.operator.conftest import NS

DEMO = REPO / "examples" / "demo"


Run = Callable[..., subprocess.CompletedProcess[str]]


def kubectl_in(kubeconfig: Path, cache: Path) -> Run:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed on this machine")

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}", "-n", NS, *args],
            input=input, capture_output=True, text=True, timeout=90,
        )  # fmt: skip

    return run


BROKEN = [
    ("agents.yaml", "engineer", ("spec", "maxConcurrentTasks"), 0,
     ["spec.maxConcurrentTasks", "should be greater than or equal to 1"]),
    ("agents.yaml", "engineer", ("spec", "sandbox", "egress", "cidrs"), ["10.0.0.0/8"],
     ["spec.sandbox.egress.cidrs", "egress.cidrs is only allowed when egress.mode is AllowList"]),
    ("team.yaml", "demo", ("spec", "lead"), "nobody",
     ["spec.lead", "spec.lead must be one of spec.members"]),
    ("agents.yaml", "lead", ("spec", "model"), None, ['spec.model: Required value']),
]  # fmt: skip


def document(file: str, name: str) -> dict[str, object]:
    for doc in yaml.safe_load_all((DEMO / file).read_text()):
        if doc and doc["metadata"]["name"] == name:
            return dict(doc)
    raise AssertionError(f"{file} has no {name}")


@pytest.mark.parametrize(("file", "name", "path", "value", "messages"), BROKEN)
def test_a_broken_field_is_refused_by_kubectl_apply_and_nothing_is_lost(
    cluster: Served, tmp_path: Path, file: str, name: str,
    path: tuple[str, ...], value: object, messages: list[str],
) -> None:  # fmt: skip
    kubeconfig = cluster.kubeconfig
    kubectl = kubectl_in(kubeconfig, tmp_path / "kcache")
    good = document(file, name)
    applied = kubectl("apply", "-f", "-", input=yaml.safe_dump(good))
    assert applied.returncode == 0, applied.stderr
    kind = str(good["kind"]).lower()
    stored = json.loads(kubectl("get", kind, name, "-o", "json").stdout)

    bad = json.loads(json.dumps(good))
    parent = bad
    for key in path[:-1]:
        parent = parent.setdefault(key, {})
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    refused = kubectl("apply", "-f", "-", input=yaml.safe_dump(bad))
    assert refused.returncode != 0
    for message in messages:
        assert message in refused.stderr, refused.stderr
    after = json.loads(kubectl("get", kind, name, "-o", "json").stdout)
    assert after["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]
    assert after["spec"] == stored["spec"]


async def test_a_task_for_a_missing_agent_ends_with_a_condition_kubectl_can_wait_for(
    cluster: Served, operator: asyncio.subprocess.Process,
    tmp_path: Path,
) -> None:  # fmt: skip
    kubeconfig = cluster.kubeconfig
    kubectl = kubectl_in(kubeconfig, tmp_path / "kcache")
    task = document("task.yaml", "slugify")
    task["spec"] = {**dict(task["spec"]), "assignee": {"agent": "nobody"}}  # type: ignore[arg-type]
    applied = await asyncio.to_thread(kubectl, "apply", "-f", "-", input=yaml.safe_dump(task))
    assert applied.returncode == 0, applied.stderr
    waited = await asyncio.to_thread(
        kubectl, "wait", "task/slugify", "--for=condition=Accepted=False", "--timeout=60s"
    )
    assert waited.returncode == 0, waited.stderr
    shown = await asyncio.to_thread(
        kubectl, "get", "task", "slugify", "-o",
        "jsonpath={.status.conditions[?(@.type=='Accepted')].reason}: "
        "{.status.conditions[?(@.type=='Accepted')].message}",
    )  # fmt: skip
    assert shown.stdout.startswith("AgentNotFound: "), shown.stdout
    assert 'the Agent "nobody" does not exist' in shown.stdout
