"""The Team's rules on delegation, and the child Task a granted request becomes (pure).

A session asks for a delegation by writing a request into its own Task's status; the operator
alone creates child Tasks, so the rules hold whatever the model asks: allowed edges, depth,
fan-out, concurrency, cycles, and a child never outliving its parent's remaining time.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from decimal import Decimal

from cadre.api.meta import API_VERSION
from cadre.api.names import (
    DELEGATION_ANNOTATION,
    DEPTH_ANNOTATION,
    MANAGED_BY,
    PARENT_LABEL,
    TEAM_LABEL,
)
from cadre.api.task import MAX_TASK_NAME, DelegationRequest
from cadre.api.team import TeamSpec
from cadre.api.types import Obj
from cadre.operator.review import reviewer_for


@dataclass(frozen=True)
class ParentView:
    """The delegating Task, as the rules need it."""

    namespace: str
    name: str
    uid: str
    agent: str
    team: str | None
    depth: int
    ancestors: tuple[str, ...]
    """Agents of the Tasks above this one, top first (this Task's own agent not included)."""
    children_total: int = 0
    children_active: int = 0
    remaining_seconds: float | None = None
    """Time left before the parent's own timeout; None when it has none."""
    remaining_usd: Decimal | None = None
    """What the parent's tree may still spend (its maxCostUSD less its tree's cost); None when
    it has no cap. A child gets at most this as its own maxCostUSD."""
    trace: dict[str, str] = field(default_factory=dict)
    """The annotation carrying the parent's span to its children (api/tracing.py)."""


def refusal(team: TeamSpec | None, parent: ParentView, request: DelegationRequest) -> str | None:
    """Why the Team's rules forbid this delegation, or None when they allow it."""
    if team is None or parent.team is None:
        return "this Task is not worked by a Team, so there is no one to delegate to"
    members = {m.agent: m for m in team.members}
    own = members.get(parent.agent)
    if own is None:
        return f'agent "{parent.agent}" is not a member of team "{parent.team}"'
    if request.agent not in members:
        return f'"{request.agent}" is not a member of team "{parent.team}"'
    if request.agent not in own.delegates_to:
        allowed = ", ".join(own.delegates_to) or "nobody"
        return (
            f'team "{parent.team}" does not let {parent.agent} delegate to {request.agent} '
            f"({parent.agent} may delegate to: {allowed})"
        )
    chain = (*parent.ancestors, parent.agent)
    if request.agent in chain:
        path = " -> ".join((*chain, request.agent))
        return f"delegating to {request.agent} would form a cycle: {path}"
    depth = parent.depth + 1
    if depth > team.delegation.max_depth:
        return (
            f'a child of this Task would be at depth {depth}; team "{parent.team}" allows '
            f"maxDepth {team.delegation.max_depth}"
        )
    if parent.children_total >= team.delegation.max_children_per_task:
        return (
            f"this Task already delegated {parent.children_total} Tasks; team "
            f'"{parent.team}" allows maxChildrenPerTask {team.delegation.max_children_per_task}'
        )
    if parent.children_active >= team.delegation.max_concurrent_children:
        return (
            f"{parent.children_active} delegated Tasks are still unfinished; team "
            f'"{parent.team}" allows maxConcurrentChildren '
            f"{team.delegation.max_concurrent_children} (wait for one to finish first)"
        )
    if parent.remaining_seconds is not None and parent.remaining_seconds < 1:
        return "this Task has no time left before its own timeout"
    if parent.remaining_usd is not None and parent.remaining_usd <= 0:
        return "this Task's budget is spent: its tree has cost its maxCostUSD already"
    return None


def usd(amount: Decimal) -> str:
    """An amount as the API writes it (a UsdAmount: at most 6 decimals, no exponent)."""
    return f"{max(amount, Decimal(0)).quantize(Decimal('0.000001')).normalize():f}"


def task_cap(task: Obj) -> Decimal | None:
    """The Task's maxCostUSD as its session runs under it (``status.limits``, written by its
    harness from the Agent's limits narrowed by the Task's); None when uncapped."""
    cap = ((task.get("status") or {}).get("limits") or {}).get("maxCostUSD")
    if cap is None:
        cap = (task["spec"].get("limits") or {}).get("maxCostUSD")
    return None if cap is None else Decimal(str(cap))


def child_task_name(parent: str, request_id: str) -> str:
    """Deterministic, so a request handled twice (operator restarted) creates one child."""
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:6]
    stem = parent[: MAX_TASK_NAME - len(digest) - 1].rstrip("-.")
    return f"{stem}-{digest}"


def child_timeout_seconds(
    remaining_seconds: float | None, agent_timeout_seconds: float | None
) -> int | None:
    """A child never outlives its parent: its timeout is the smaller of the parent's remaining
    time and its own Agent's timeout (a Task's limits replace the Agent's, so both count)."""
    bounds = [b for b in (remaining_seconds, agent_timeout_seconds) if b is not None]
    return max(1, math.floor(min(bounds))) if bounds else None


def build_child_task(
    parent: ParentView,
    request_id: str,
    request: DelegationRequest,
    team: TeamSpec,
    timeout_seconds: int | None,
) -> Obj:
    """The child Task of a granted request: owned by its parent (deleting the parent deletes the
    tree), labelled so ``kubectl get tasks -l cadre.dev/parent=NAME`` lists the children."""
    assert parent.team is not None
    spec: Obj = {
        "assignee": {"agent": request.agent},
        "title": request.title,
        "prompt": request.instructions or request.title or "(no instructions were given)",
        "acceptanceCriteria": request.acceptance_criteria,
        "parentRef": {"name": parent.name, "uid": parent.uid, "agent": parent.agent},
        "review": {"maxRounds": team.review.max_rounds},
    }
    reviewer = reviewer_for(team, request.agent, parent.agent)
    if reviewer is not None:
        spec["review"]["reviewer"] = reviewer
    if request.deliverables:
        spec["deliverables"] = list(request.deliverables)
    if timeout_seconds is not None:
        spec["limits"] = {"timeout": f"{timeout_seconds}s"}
    if parent.remaining_usd is not None:  # the child's whole tree spends from what is left
        spec.setdefault("limits", {})["maxCostUSD"] = usd(parent.remaining_usd)
    return {
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": {
            "name": child_task_name(parent.name, request_id),
            "namespace": parent.namespace,
            "labels": {**MANAGED_BY, PARENT_LABEL: parent.name, TEAM_LABEL: parent.team},
            "annotations": {
                DEPTH_ANNOTATION: str(parent.depth + 1),
                DELEGATION_ANNOTATION: request_id,
                **parent.trace,
            },
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Task",
                    "name": parent.name,
                    "uid": parent.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }
