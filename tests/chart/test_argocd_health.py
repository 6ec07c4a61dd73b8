"""Argo CD health checks for Agent, Team and Task, run as Argo CD runs them: the Lua from
charts/cadre/argocd with the object as the global ``obj`` (lupa's Lua stands in for Argo CD's
gopher-lua; both are Lua 5.1-compatible for what the scripts use). The argocd-cm snippet is
checked to be current."""

from __future__ import annotations

from typing import Any

import lupa
import pytest
import yaml

from tools.argocd import FOLDER, SNIPPET, snippet


def to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = to_lua(runtime, obj)
    script = (FOLDER / f"health-{kind.lower()}.lua").read_text()
    result = runtime.execute(script)
    return str(result["status"]), str(result["message"])


def ready(status: str, reason: str, message: str = "m") -> dict[str, Any]:
    return {"type": "Ready", "status": status, "reason": reason, "message": message}


AGENTS = [
    ({}, "Progressing"),
    ({"conditions": [ready("True", "HarnessRunning")]}, "Healthy"),
    ({"conditions": [ready("False", "SecretMissing", "no Secret")]}, "Degraded"),
    ({"conditions": [ready("False", "SecretNotModelKey", "not labelled")]}, "Degraded"),
    ({"conditions": [ready("False", "SecretKeyMissing", "no key")]}, "Degraded"),
    ({"conditions": [ready("False", "EndpointNotAllowed", "baseURL")]}, "Degraded"),
    ({"conditions": [ready("False", "HarnessNotReady")]}, "Progressing"),
    ({"observedGeneration": 1, "conditions": [ready("True", "HarnessRunning")]}, "Progressing"),
]


@pytest.mark.parametrize(("status", "expected"), AGENTS)
def test_agent_health(status: dict[str, Any], expected: str) -> None:
    obj = {"metadata": {"name": "a", "generation": 2}, "spec": {}, "status": status or None}
    if not status:
        del obj["status"]
    assert health("Agent", obj)[0] == expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (ready("True", "AllMembersReady"), "Healthy"),
        (ready("False", "AgentNotFound", "member Agents that do not exist: x"), "Degraded"),
        (ready("False", "AgentNotReady"), "Progressing"),
    ],
)
def test_team_health(condition: dict[str, Any], expected: str) -> None:
    status, message = health("Team", {"metadata": {}, "status": {"conditions": [condition]}})
    assert status == expected
    assert message == condition["message"]


NOT_ACCEPTED = {"type": "Accepted", "status": "False", "reason": "AgentNotFound",
                "message": 'the Agent "x" does not exist in namespace "d"'}  # fmt: skip
SUCCEEDED_FALSE = {"type": "Succeeded", "status": "False", "reason": "MaxTurns",
                   "message": "the session reached maxTurns (40)"}  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "status", "expected"),
    [
        ({}, None, "Progressing"),
        ({}, {"phase": "Pending"}, "Progressing"),
        ({}, {"phase": "Running"}, "Progressing"),
        ({}, {"phase": "Waiting"}, "Progressing"),
        ({}, {"phase": "InReview"}, "Progressing"),  # the requester reviews: still working
        ({"review": {"humanApproval": True}}, {"phase": "InReview"}, "Suspended"),
        ({}, {"phase": "Succeeded"}, "Healthy"),
        ({}, {"phase": "Failed", "conditions": [SUCCEEDED_FALSE]}, "Degraded"),
        ({}, {"phase": "Cancelled"}, "Degraded"),
        # Stuck: no Agent takes it until a person creates one.
        ({}, {"phase": "Pending", "conditions": [NOT_ACCEPTED]}, "Degraded"),
        ({}, {"conditions": [NOT_ACCEPTED]}, "Degraded"),
        (
            {},
            {"phase": "Pending", "conditions": [{**NOT_ACCEPTED, "status": "True"}]},
            "Progressing",
        ),
    ],
)
def test_task_health(spec: dict[str, Any], status: dict[str, Any] | None, expected: str) -> None:
    obj: dict[str, Any] = {"metadata": {}, "spec": spec}
    if status is not None:
        obj["status"] = status
    assert health("Task", obj)[0] == expected


def test_a_failed_task_says_why() -> None:
    obj = {
        "metadata": {},
        "spec": {},
        "status": {"phase": "Failed", "conditions": [SUCCEEDED_FALSE]},
    }
    assert health("Task", obj) == ("Degraded", "the session reached maxTurns (40)")


def test_the_argocd_cm_snippet_is_current_and_carries_every_script() -> None:
    assert SNIPPET.read_text() == snippet(), "run `make manifests` and commit the result"
    data = yaml.safe_load(SNIPPET.read_text())["data"]
    assert set(data) == {f"resource.customizations.health.cadre.dev_{k}" for k in
                         ("Agent", "Team", "Task")}  # fmt: skip


def test_the_example_application_points_at_the_chart() -> None:
    app = yaml.safe_load((FOLDER.parents[2] / "examples/argocd/application.yaml").read_text())
    assert app["kind"] == "Application"
    assert app["spec"]["source"]["path"] == "charts/cadre"
    assert (FOLDER.parents[2] / app["spec"]["source"]["path"] / "Chart.yaml").exists()
