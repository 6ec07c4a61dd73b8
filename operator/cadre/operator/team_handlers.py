"""The operator's Team handlers: Teams' readiness, delegation requests turned into child Tasks
(or refused, with the reason), children counted on their parent, a finished parent's unfinished
children cancelled, and a waiting session's sandbox released.

Level-based like the rest: every pass derives what to do from what exists (a child Task's name
comes from the request's id, so a pass repeated after a crash creates nothing twice).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

import kopf

from cadre.api import GROUP, VERSION
from cadre.api.agent import AgentSpec
from cadre.api.conditions import merge_condition
from cadre.api.limits import Limits, ceiling_limits, parse_duration
from cadre.api.names import TEAM_LABEL
from cadre.api.review import awaiting_screening
from cadre.api.task import FINAL_PHASES, DelegationRequest, parent_of, tree_cost
from cadre.api.team import TeamSpec
from cadre.api.tracing import child_annotation
from cadre.api.types import Obj
from cadre.operator import apply, events, metrics
from cadre.operator.delegation import (
    ParentView,
    build_child_task,
    child_task_name,
    child_timeout_seconds,
    refusal,
    task_cap,
    usd,
)
from cadre.operator.review import build_review_task, review_task_name
from cadre.operator.settings import BACKOFF


def _ref(body: Obj) -> kopf.Body:
    return cast(kopf.Body, body)


def _agent_of(task: Obj) -> str:
    return str(
        (task.get("status") or {}).get("agent") or task["spec"]["assignee"].get("agent") or ""
    )


def _ready(agent: Obj) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (agent.get("status") or {}).get("conditions") or []
    )


# ---------------------------------------------------------------------------------------------
# Teams


def team_readiness(members: list[str], agents: dict[str, Obj]) -> tuple[bool, str, str, int]:
    """``Ready`` of a Team from its members' Agents (pure): the reason names who is missing."""
    missing = [m for m in members if m not in agents]
    waiting = [m for m in members if m in agents and not _ready(agents[m])]
    ready = len(members) - len(missing) - len(waiting)
    if missing:
        names = ", ".join(missing)
        return False, "AgentNotFound", f"member Agents that do not exist: {names}", ready
    if waiting:
        names = ", ".join(waiting)
        return False, "AgentNotReady", f"member Agents that are not Ready: {names}", ready
    return True, "AllMembersReady", f"all {len(members)} member Agents are Ready", ready


@kopf.timer(GROUP, VERSION, "teams", interval=3.0, id="team-ready", backoff=BACKOFF)
def refresh_team_ready(
    spec: kopf.Spec, namespace: str | None, meta: kopf.Meta, status: kopf.Status,
    patch: kopf.Patch, **_: Any,
) -> None:  # fmt: skip
    assert namespace is not None  # Teams are namespaced
    members = [m["agent"] for m in spec.get("members") or []]
    ok, reason, message, ready = team_readiness(members, apply.list_agents(namespace))
    current = list(status.get("conditions") or [])
    old = next((c for c in current if c.get("type") == "Ready"), None)
    same = (
        old is not None
        and old.get("status") == ("True" if ok else "False")
        and old.get("message") == message
        and status.get("members") == len(members)
        and status.get("readyMembers") == ready
    )
    if same:
        return
    generation = meta.get("generation")
    patch.status["conditions"] = merge_condition(
        current, "Ready", ok, reason, message, now=datetime.now(UTC),
        observed_generation=generation,
    )  # fmt: skip
    patch.status["members"] = len(members)
    patch.status["readyMembers"] = ready
    patch.status["observedGeneration"] = generation


# ---------------------------------------------------------------------------------------------
# Delegation


def _ancestors(namespace: str, task: Obj) -> tuple[str, ...]:
    """Agents of the Tasks above ``task``, top first (bounded: depth is at most 10)."""
    chain: list[str] = []
    current = task
    for _ in range(11):
        ref = current["spec"].get("parentRef")
        parent = apply.get_task(namespace, ref["name"]) if ref else None
        if parent is None:
            break
        chain.append(_agent_of(parent))
        current = parent
    return tuple(reversed(chain))


def _agent_timeout(agent: Obj | None) -> float | None:
    if agent is None:
        return None
    timeout = AgentSpec.model_validate(agent["spec"]).limits.timeout
    return parse_duration(timeout) if timeout else None


def _remaining_seconds(namespace: str, task: Obj) -> float | None:
    """Time left before ``task``'s own timeout: its Agent's, narrowed by the Task's limits."""
    agent = apply.get_agent(namespace, _agent_of(task))
    ceiling = AgentSpec.model_validate(agent["spec"]).limits if agent else Limits()
    timeout = ceiling_limits(ceiling, Limits.model_validate(task["spec"].get("limits") or {}))
    total = parse_duration(timeout.timeout) if timeout.timeout else None
    if total is None:
        return None
    started = (task.get("status") or {}).get("startTime")
    if not started:
        return total
    begun = datetime.fromisoformat(started.replace("Z", "+00:00"))
    return total - (datetime.now(UTC) - begun).total_seconds()


def reconcile_delegations(task: Obj) -> None:
    """Answer every unanswered delegation request of ``task``: create the child or refuse."""
    status = task.get("status") or {}
    pending = {k: v for k, v in (status.get("delegations") or {}).items() if not v.get("state")}
    if not pending or status.get("phase") in FINAL_PHASES:
        return
    meta = task["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    team_name = status.get("team")
    team_obj = apply.get_team(namespace, team_name) if team_name else None
    team = TeamSpec.model_validate(team_obj["spec"]) if team_obj else None
    children = apply.list_children(namespace, name)
    existing = {c["metadata"]["name"] for c in children}
    active = sum(1 for c in children if (c.get("status") or {}).get("phase") not in FINAL_PHASES)
    ancestors = _ancestors(namespace, task)
    remaining = _remaining_seconds(namespace, task)
    cap = task_cap(task)
    budget = None if cap is None else cap - tree_cost(task)
    answers: Obj = {}
    for request_id, raw in sorted(pending.items()):
        request = DelegationRequest.model_validate(raw)
        child = child_task_name(name, request_id)
        cleared = {"instructions": None, "acceptanceCriteria": None}
        if child not in existing:
            depth = int(status.get("depth") or 0)
            view = ParentView(
                namespace, name, meta["uid"], _agent_of(task), team_name, depth, ancestors,
                len(existing), active, remaining, budget, child_annotation(task),
            )  # fmt: skip
            why = refusal(team, view, request)
            if why is not None:
                answers[request_id] = {"state": "Refused", "message": why[:1024], **cleared}
                events.warn(_ref(task), reason="DelegationRefused", message=why)
                continue
            assert team is not None
            timeout = child_timeout_seconds(
                remaining, _agent_timeout(apply.get_agent(namespace, request.agent))
            )
            apply.ensure_exists(build_child_task(view, request_id, request, team, timeout))
            existing.add(child)
            active += 1
            events.info(
                _ref(task),
                reason="Delegated",
                message=f"{child} to {request.agent}: {request.title}",
            )
        answers[request_id] = {"state": "Created", "child": child, **cleared}
    apply.patch_task_status(namespace, name, {"delegations": answers})


def child_counts(children: list[Obj]) -> Obj:
    phases = [(c.get("status") or {}).get("phase") for c in children]
    return {
        "total": len(phases),
        "active": sum(1 for p in phases if p not in FINAL_PHASES),
        "succeeded": sum(1 for p in phases if p == "Succeeded"),
        "failed": sum(1 for p in phases if p in ("Failed", "Cancelled")),
    }


def count_on_parent(child: Obj) -> None:
    """Keep the parent's ``status.children`` true (written only when it changed): the counts
    of its delegated Tasks, and what they and the reviews of its deliveries cost."""
    namespace = child["metadata"]["namespace"]
    parent_name = parent_of(child)
    parent = apply.get_task(namespace, parent_name) if parent_name else None
    if parent is None or parent_name is None:
        return
    children = apply.list_children(namespace, parent_name)
    reviews = apply.list_reviews(namespace, parent_name)
    counts = child_counts(children)
    counts["costUSD"] = usd(sum((tree_cost(t) for t in children + reviews), Decimal(0)))
    if (parent.get("status") or {}).get("children") != counts:
        apply.patch_task_status(namespace, parent_name, {"children": counts})


def stop_when_spent(task: Obj) -> bool:
    """A Task whose tree has spent its maxCostUSD: its unfinished delegated work and reviews
    are cancelled (its own session stops before its next model call)."""
    cap = task_cap(task)
    if cap is None or tree_cost(task) < cap:
        return False
    namespace, name = task["metadata"]["namespace"], task["metadata"]["name"]
    for below in apply.list_children(namespace, name) + apply.list_reviews(namespace, name):
        if (below.get("status") or {}).get("phase") in FINAL_PHASES or below["spec"].get("cancel"):
            continue
        apply.cancel_task(namespace, below["metadata"]["name"])
        metrics.BUDGET_SPENT.labels(namespace, _agent_of(task)).inc()
        events.warn(
            _ref(task), reason="BudgetSpent",
            message=f"{below['metadata']['name']} cancelled: the tree of {name} has cost "
            f"${tree_cost(task):.4f} of its maxCostUSD {cap}",
        )  # fmt: skip
    return True


def cancel_reviews(task: Obj) -> None:
    """A delegated Task that ended needs no review any more."""
    namespace, name = task["metadata"]["namespace"], task["metadata"]["name"]
    for review in apply.list_reviews(namespace, name):
        open_ = (review.get("status") or {}).get("phase") not in FINAL_PHASES
        if open_ and not review["spec"].get("cancel"):
            apply.cancel_task(namespace, review["metadata"]["name"])


def cancel_children(task: Obj) -> None:
    """A Task that ended takes its unfinished delegated work with it."""
    namespace, name = task["metadata"]["namespace"], task["metadata"]["name"]
    for child in apply.list_children(namespace, name):
        status = child.get("status") or {}
        # An accepted result is finishing (its harness writes Succeeded), not unfinished work.
        accepted = (status.get("review") or {}).get("decision") == "Accepted"
        if (
            status.get("phase") not in FINAL_PHASES
            and not child["spec"].get("cancel")
            and not accepted
        ):
            apply.cancel_task(namespace, child["metadata"]["name"])
            events.info(
                _ref(task), reason="ChildCancelled",
                message=f"{child['metadata']['name']} cancelled: its parent ended",
            )  # fmt: skip


def request_review(task: Obj, memo: kopf.Memo | Obj) -> None:
    """A delivery waiting for the Team's reviewer gets its review Task (once: the name is
    deterministic, and the memo spares repeated creates while it waits)."""
    delivery = awaiting_screening(task)
    if delivery is None or memo.get("review-requested") == delivery:
        return
    meta = task["metadata"]
    team = (task.get("status") or {}).get("team") or meta.get("labels", {}).get(TEAM_LABEL, "")
    review = build_review_task(task, delivery, team)
    apply.ensure_exists(review)
    memo["review-requested"] = delivery
    events.info(
        _ref(task), reason="ReviewRequested",
        message=f"delivery #{delivery} goes to reviewer {task['spec']['review']['reviewer']} "
        f"first: {review['metadata']['name']}",
    )  # fmt: skip


def settle_review(review: Obj) -> None:
    """A review Task that ended without a verdict passes its delivery on unscreened (the
    requester still reviews it), saying so, rather than leaving it waiting forever."""
    target = review["spec"]["reviewOf"]
    namespace = review["metadata"]["namespace"]
    task = apply.get_task(namespace, target["task"])
    if task is None or awaiting_screening(task) != target["delivery"]:
        return  # a verdict came, or the delivery moved on
    apply.patch_task_status(namespace, target["task"], {"review": {"screened": target["delivery"]}})
    phase = (review.get("status") or {}).get("phase")
    events.warn(
        _ref(task), reason="ReviewerGaveNoVerdict",
        message=f"{review['metadata']['name']} ended {phase} without a verdict; delivery "
        f"#{target['delivery']} goes to the requester unscreened",
    )  # fmt: skip


def retry_review(task: Obj) -> None:
    """The sweep's pass over a delivery that still waits for the reviewer: its review Task is
    there (a create cut short is repeated), and one that ended without a verdict lets the
    delivery go on (its end event may have been missed or its handling cut short)."""
    delivery = awaiting_screening(task)
    if delivery is None:
        return
    meta = task["metadata"]
    review = apply.get_task(meta["namespace"], review_task_name(meta["name"], delivery))
    if review is None:
        request_review(task, {})
    elif (review.get("status") or {}).get("phase") in FINAL_PHASES:
        settle_review(review)


@kopf.on.event(GROUP, VERSION, "tasks", id="task-delegation")
def delegation_events(body: kopf.Body, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED":
        return
    task = dict(body)
    status = task.get("status") or {}
    phase = status.get("phase")
    reconcile_delegations(task)
    request_review(task, memo)
    if task["spec"].get("reviewOf") and phase in FINAL_PHASES:
        settle_review(task)
    # The parent's counts move only when a child's phase or its tree's cost does (memo: per
    # object, in memory; after a restart the first event recounts once).
    cost = str(tree_cost(task))
    if parent_of(task) and (memo.get("phase") != phase or memo.get("cost") != cost):
        count_on_parent(task)
    memo["cost"] = cost
    if phase not in FINAL_PHASES:
        stop_when_spent(task)
    reviewed = (task["spec"].get("review") or {}).get("reviewer")
    if reviewed and phase in FINAL_PHASES and memo.get("phase") != phase:
        cancel_reviews(task)
    memo["phase"] = phase
    if phase in FINAL_PHASES and int((status.get("children") or {}).get("active") or 0) > 0:
        cancel_children(task)


def unanswered(status: Obj) -> bool:
    """A delegation request of this Task still waits for the operator's answer."""
    return any(not (r or {}).get("state") for r in (status.get("delegations") or {}).values())
