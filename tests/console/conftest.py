"""A local cluster with an organization in it (Agents, a Team, Tasks with statuses as harnesses
write them) and a console serving it, as ``cadre console`` does, on a thread of the test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cadre.api.names import PARENT_LABEL, TEAM_LABEL
from cadre.cli.console.run import Running, start_in_thread
from cadre.cli.console.server import ConsoleSettings

from tests.localcluster.conftest import REPO, Http, Served, serving
from tests.localcluster.node.conftest import eventually

NS = "default"
CADRE = f"/apis/cadre.dev/v1alpha1/namespaces/{NS}"


@dataclass
class Org:
    served: Served
    console: Running

    @property
    def http(self) -> Http:
        return self.served.http


def agent(name: str) -> dict[str, Any]:
    return {"apiVersion": "cadre.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name},
            "spec": {"role": f"The {name}", "model": "claude-sonnet-4-6",
                     "apiKeySecretRef": {"name": "anthropic"}}}  # fmt: skip


def set_status(http: Http, plural: str, name: str, status: dict[str, Any]) -> None:
    response = http("PATCH", f"{CADRE}/{plural}/{name}/status", {"status": status},
                    content_type="application/merge-patch+json")  # fmt: skip
    assert response.ok, response.text


def task(
    http: Http, name: str, prompt: str, labels: dict[str, str] | None = None, **spec: Any
) -> None:
    spec.setdefault("assignee", {"agent": "lead"})
    metadata = {"name": name, "labels": labels or {}}
    body = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Task", "metadata": metadata,
            "spec": {"prompt": prompt, **spec}}  # fmt: skip
    response = http("POST", f"{CADRE}/tasks", body)
    assert response.status_code == 201, response.text


def ready(status: str = "True", reason: str = "HarnessReady") -> list[dict[str, Any]]:
    return [{"type": "Ready", "status": status, "reason": reason, "message": "",
             "lastTransitionTime": "2026-12-06T10:00:00Z"}]  # fmt: skip


def populate(http: Http) -> None:
    """A platform Team (lead, engineer, reviewer), a solo Agent, and Tasks: a tree in review
    awaiting a person, and one waiting on a tool call a Policy asked about."""
    for name in ("lead", "engineer", "reviewer", "analyst"):
        assert http("POST", f"{CADRE}/agents", agent(name)).status_code == 201
    team = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Team", "metadata": {"name": "platform"},
            "spec": {"lead": "lead", "members": [
                {"agent": "lead", "delegatesTo": ["engineer"]}, {"agent": "engineer"},
                {"agent": "reviewer"}], "review": {"reviewer": "reviewer"}}}  # fmt: skip
    assert http("POST", f"{CADRE}/teams", team).status_code == 201
    set_status(http, "agents", "lead", {"conditions": ready(), "activeTasks": 1,
                                        "memoryEntries": 2})  # fmt: skip
    set_status(http, "agents", "engineer", {"conditions": ready(), "activeTasks": 1})
    set_status(http, "agents", "reviewer", {"conditions": ready("False", "SecretNotModelKey")})
    task(http, "ship-it", "Ship the slugify library.", assignee={"team": "platform"},
         review={"humanApproval": True})  # fmt: skip
    task(http, "build", "Write slugify.", assignee={"agent": "engineer"},
         parentRef={"name": "ship-it", "agent": "lead"},
         labels={TEAM_LABEL: "platform", PARENT_LABEL: "ship-it"})  # fmt: skip
    set_status(http, "tasks", "ship-it", {
        "phase": "InReview", "agent": "lead", "startTime": "2026-12-06T10:00:00Z",
        "usage": {"turns": 3, "inputTokens": 1000, "outputTokens": 200, "costUSD": "0.0150"},
        "result": {"summary": "slugify is ready: 12 tests pass."}})  # fmt: skip
    set_status(http, "tasks", "build", {
        "phase": "Running", "agent": "engineer", "parent": "ship-it",
        "startTime": "2026-12-06T10:01:00Z",
        "usage": {"turns": 5, "inputTokens": 3000, "outputTokens": 700, "costUSD": "0.0420"},
        "pendingToolCalls": {"toolu_01": {
            "tool": "bash", "input": "pip install slugify-extra", "policy": "ask-installs",
            "rule": "installs", "message": "Installing packages needs a person."}}})  # fmt: skip


@pytest.fixture
def org(tmp_path: Path) -> Iterator[Org]:
    with serving(tmp_path, crd_dir=REPO / "crds") as served:
        populate(served.http)
        running = start_in_thread(served.kubeconfig, ConsoleSettings())
        try:
            # Every watch has listed once: pages render the whole organization from here on,
            # not the "Reading the cluster…" state of a console still listing.
            health = running.url.rstrip("/") + "/healthz"
            eventually(lambda: requests.get(health, timeout=10).text == "ok", timeout=30)
            yield Org(served, running)
        finally:
            running.stop()
