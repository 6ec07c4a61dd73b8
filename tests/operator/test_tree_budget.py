"""A Task's maxCostUSD caps its whole delegation tree, review Tasks included (pure pieces):
what the tree cost, what a child may still spend, and when delegation is refused."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from cadre.api.task import DelegationRequest, parent_of, tree_cost
from cadre.api.team import TeamSpec
from cadre.cli.tree import render_tree, task_tree
from cadre.operator.delegation import ParentView, build_child_task, refusal, usd

TEAM = TeamSpec.model_validate({
    "lead": "lead",
    "members": [{"agent": "lead", "delegatesTo": ["engineer"]}, {"agent": "engineer"}],
})  # fmt: skip
REQUEST = DelegationRequest.model_validate(
    {"agent": "engineer", "title": "t", "instructions": "do it"}
)


def _view(remaining: Decimal | None) -> ParentView:
    return ParentView("ns", "root", "uid", "lead", "team", 0, (), remaining_usd=remaining)


def _task(name: str, cost: str, below: str = "0", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": f"2026-01-01T00:00:0{len(name) % 10}Z"},
        "spec": {"assignee": {"agent": "engineer"}, "prompt": "p", **spec},
        "status": {"usage": {"costUSD": cost, "turns": 1}, "children": {"costUSD": below}},
    }


def test_the_tree_cost_is_the_tasks_own_and_everything_below_it() -> None:
    assert tree_cost(_task("a", "0.0288", "0.0742")) == Decimal("0.1030")
    assert tree_cost({"spec": {}, "status": {}}) == 0
    assert usd(Decimal("0.10300000")) == "0.103"
    assert usd(Decimal("-1")) == "0"  # never a negative budget on the wire


def test_a_spent_budget_refuses_delegation_and_a_child_gets_what_is_left() -> None:
    assert refusal(TEAM, _view(Decimal("0")), REQUEST) == (
        "this Task's budget is spent: its tree has cost its maxCostUSD already"
    )
    assert refusal(TEAM, _view(Decimal("0.02")), REQUEST) is None
    child = build_child_task(_view(Decimal("0.0125")), "call-1", REQUEST, TEAM, None)
    assert child["spec"]["limits"] == {"maxCostUSD": "0.0125"}
    uncapped = build_child_task(_view(None), "call-1", REQUEST, TEAM, None)
    assert "limits" not in uncapped["spec"]


def test_review_tasks_belong_to_the_task_they_review_in_the_tree_and_its_total() -> None:
    root = _task("root", "0.01")
    child = _task("child", "0.02", parentRef={"name": "root"})
    review = _task("review", "0.005", reviewOf={"task": "child", "delivery": 1})
    assert parent_of(review) == "child"
    assert parent_of(child) == "root"
    assert parent_of(root) is None
    rows = task_tree([root, child, review], "root", datetime.now(UTC))
    assert [(r.name, r.depth) for r in rows] == [("root", 0), ("child", 1), ("review", 2)]
    lines = render_tree(rows).splitlines()
    assert lines[-1].split()[:4] == ["TOTAL", "3", "0", "$0.0350"]
