"""The Team's rules on delegation (pure): each refusal names its rule, and a granted request
becomes a child Task that validates, is owned by its parent and never outlives it."""

from __future__ import annotations

import pytest
from cadre.api.names import DEPTH_ANNOTATION, PARENT_LABEL, TEAM_LABEL
from cadre.api.task import MAX_TASK_NAME, DelegationRequest, Task
from cadre.api.team import TeamSpec
from cadre.operator.delegation import (
    ParentView,
    build_child_task,
    child_task_name,
    child_timeout_seconds,
    refusal,
)
from cadre.operator.team_handlers import child_counts, team_readiness

TEAM = TeamSpec.model_validate(
    {
        "lead": "lead",
        "members": [
            {"agent": "lead", "delegatesTo": ["engineer", "writer"]},
            {"agent": "engineer", "delegatesTo": ["tester", "lead"]},
            {"agent": "tester", "delegatesTo": ["writer"]},
            {"agent": "writer"},
        ],
        "delegation": {"maxDepth": 2, "maxChildrenPerTask": 3, "maxConcurrentChildren": 2},
        "review": {"maxRounds": 2},
    }
)


def parent(
    agent: str = "lead", depth: int = 0, ancestors: tuple[str, ...] = (), **kw: object
) -> ParentView:
    return ParentView("ns", "build", "uid-1", agent, "platform", depth, ancestors, **kw)  # type: ignore[arg-type]


def ask(agent: str) -> DelegationRequest:
    return DelegationRequest(agent=agent, title="t", instructions="do it")


def test_an_allowed_edge_is_granted() -> None:
    assert refusal(TEAM, parent(), ask("engineer")) is None


def test_a_forbidden_edge_is_refused_and_the_allowed_ones_are_named() -> None:
    message = refusal(TEAM, parent(), ask("tester"))
    assert message == (
        'team "platform" does not let lead delegate to tester '
        "(lead may delegate to: engineer, writer)"
    )


def test_a_cycle_is_refused_with_its_path() -> None:
    message = refusal(TEAM, parent("engineer", 1, ("lead",)), ask("lead"))
    assert message == "delegating to lead would form a cycle: lead -> engineer -> lead"


def test_over_depth_is_refused() -> None:
    message = refusal(TEAM, parent("tester", 2, ("lead", "engineer")), ask("writer"))
    assert message is not None
    assert "depth 3" in message
    assert "maxDepth 2" in message


def test_over_fan_out_is_refused() -> None:
    message = refusal(TEAM, parent(children_total=3), ask("engineer"))
    assert message is not None
    assert "already delegated 3 Tasks" in message
    assert "maxChildrenPerTask 3" in message


def test_too_many_unfinished_children_are_refused() -> None:
    message = refusal(TEAM, parent(children_total=2, children_active=2), ask("engineer"))
    assert message is not None
    assert "maxConcurrentChildren 2" in message


def test_strangers_and_teamless_tasks_are_refused() -> None:
    assert (
        refusal(TEAM, parent(), ask("outsider")) == '"outsider" is not a member of team "platform"'
    )
    assert refusal(TEAM, parent("outsider"), ask("engineer")) == (
        'agent "outsider" is not a member of team "platform"'
    )
    assert refusal(None, parent(), ask("engineer")) is not None


def test_a_parent_with_no_time_left_delegates_nothing() -> None:
    assert refusal(TEAM, parent(remaining_seconds=0.5), ask("engineer")) == (
        "this Task has no time left before its own timeout"
    )


def test_child_names_are_deterministic_bounded_and_distinct() -> None:
    assert child_task_name("build", "toolu_1") == child_task_name("build", "toolu_1")
    assert child_task_name("build", "toolu_1") != child_task_name("build", "toolu_2")
    long = "x" * MAX_TASK_NAME
    assert len(child_task_name(long, "toolu_1")) <= MAX_TASK_NAME
    assert "--" not in child_task_name("a-" * 26, "t")  # no empty segment where it was cut


@pytest.mark.parametrize(
    ("remaining", "agent", "expected"),
    [(None, None, None), (100.7, None, 100), (None, 60.0, 60), (30.2, 60.0, 30), (0.2, None, 1)],
)
def test_a_child_never_outlives_its_parent(
    remaining: float | None, agent: float | None, expected: int | None
) -> None:
    assert child_timeout_seconds(remaining, agent) == expected


def test_the_child_task_is_valid_owned_labelled_and_bounded() -> None:
    view = parent("lead", 0, (), remaining_seconds=100.0)
    child = build_child_task(view, "toolu_1", ask("engineer"), TEAM, 100)
    Task.model_validate(child)  # the API's own model (and so the CRD's rules) accepts it
    assert child["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert child["metadata"]["labels"][PARENT_LABEL] == "build"
    assert child["metadata"]["labels"][TEAM_LABEL] == "platform"
    assert child["metadata"]["annotations"][DEPTH_ANNOTATION] == "1"
    assert child["spec"]["parentRef"] == {"name": "build", "uid": "uid-1", "agent": "lead"}
    assert child["spec"]["limits"] == {"timeout": "100s"}
    assert child["spec"]["review"] == {"maxRounds": 2}


def test_team_readiness_names_missing_and_unready_members() -> None:
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert team_readiness(["a", "b"], {"a": ready}) == (
        False, "AgentNotFound", "member Agents that do not exist: b", 1,
    )  # fmt: skip
    assert team_readiness(["a", "b"], {"a": ready, "b": {}})[1:3] == (
        "AgentNotReady", "member Agents that are not Ready: b",
    )  # fmt: skip
    assert team_readiness(["a"], {"a": ready})[:2] == (True, "AllMembersReady")


def test_children_are_counted_by_phase() -> None:
    phases = ["Running", "InReview", "Succeeded", "Failed", "Cancelled"]
    children = [{"status": {"phase": p}} for p in phases]
    assert child_counts(children) == {"total": 5, "active": 2, "succeeded": 1, "failed": 2}
