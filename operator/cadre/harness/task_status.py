"""What a harness writes into its Tasks' status, and reads back from them: effective limits,
usage, the final phase and condition, verdicts on a delivered result. Pure functions of their
inputs, so each is tested without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from cadre.api.conditions import merge_condition
from cadre.api.limits import Limits, ceiling_limits, parse_duration
from cadre.api.task import tree_cost
from cadre.api.types import Obj
from cadre.harness.replay import State
from cadre.harness.session import SessionLimits, Verdict

PAUSED_PHASES = ("Waiting", "InReview")
_PAUSED_MESSAGES = {
    "Waiting": "the session waits for delegated Tasks",
    "InReview": "the result waits for the requester's review",
}


def limits_status(agent: Limits, task: Limits) -> Obj:
    """``status.limits`` as a merge patch: a bound no longer set is removed, not left stale."""
    unset: Obj = {str(field.alias): None for field in Limits.model_fields.values()}
    return {**unset, **ceiling_limits(agent, task).to_json()}


def effective_limits(agent: Limits, task: Limits) -> SessionLimits:
    """``ceiling_limits`` in the units a session counts in."""
    merged = ceiling_limits(agent, task)
    return SessionLimits(
        max_turns=merged.max_turns,
        max_tokens=merged.max_tokens,
        timeout_seconds=parse_duration(merged.timeout) if merged.timeout else None,
        max_cost_usd=Decimal(merged.max_cost_usd) if merged.max_cost_usd is not None else None,
    )


def delegated_cost(task: Obj, below: list[Obj]) -> Decimal:
    """What a Task's delegated work and its reviews cost so far (pure): the operator's sum in
    ``status.children.costUSD``, or the sum over the copies of the Tasks ``below`` it when the
    harness has seen newer ones (a child's final usage wakes its parent before the operator
    has added it up)."""
    children = (task.get("status") or {}).get("children") or {}
    summed = Decimal(str(children.get("costUSD") or "0"))
    return max(summed, sum((tree_cost(t) for t in below), Decimal(0)))


def assigned_to(task: Obj, agent: str) -> bool:
    status_agent = (task.get("status") or {}).get("agent")
    if status_agent:
        return bool(status_agent == agent)
    return bool(task.get("spec", {}).get("assignee", {}).get("agent") == agent)


def now_stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_usage_status(state: State) -> Obj:
    """The Task status fields a session's progress fills in (pure)."""
    return {
        "usage": {
            "turns": state.turns,
            "inputTokens": state.usage["input_tokens"],
            "outputTokens": state.usage["output_tokens"],
            "cacheReadInputTokens": state.usage["cache_read_input_tokens"],
            "cacheCreationInputTokens": state.usage["cache_creation_input_tokens"],
            "costUSD": f"{state.cost_usd.quantize(Decimal('0.000001')).normalize():f}",
            "compactions": state.compactions,
            "contextTokens": state.context_tokens or 0,
            "modelErrors": state.model_errors,
        },
    }


def build_final_status(outcome: Obj, generation: int | None, conditions: list[Obj]) -> Obj:
    """Phase, result and the ``Succeeded`` condition of a session that ended or paused (pure);
    the other conditions are kept (a merge patch replaces the whole list). A paused session
    (``Waiting``, ``InReview``) has ``Succeeded`` Unknown and no completion time."""
    phase = outcome["outcome"]
    summary = outcome.get("result") or ""
    paused = phase in PAUSED_PHASES
    status: Obj = {
        "phase": phase,
        "conditions": merge_condition(
            conditions,
            "Succeeded",
            None if paused else phase == "Succeeded",
            outcome["reason"],
            (outcome.get("message") if paused else None)
            or _PAUSED_MESSAGES.get(phase)
            or outcome.get("message", "")[:1024],
            now=datetime.now(UTC),
            observed_generation=generation,
        ),
    }
    if summary or not paused:
        status["result"] = {"summary": summary[:4096], "truncated": len(summary) > 4096}
    if not paused:
        status["completionTime"] = now_stamp()
    return status


def delivered(task: Obj, deliveries: int) -> bool:
    """Whether the Task's status shows the session's latest delivery (pure)."""
    status = task.get("status") or {}
    shown = int((status.get("review") or {}).get("deliveries") or 0)
    return status.get("phase") == "InReview" and shown == deliveries


def version_of(task: Obj) -> str:
    return str(task["metadata"].get("resourceVersion", ""))


def verdict_of(task: Obj) -> Verdict | None:
    """The latest verdict on a delivered result (pure): the requester's, written into a child
    Task's ``status.review``, or a human's ``spec.approval`` on a top-level Task."""
    status = task.get("status") or {}
    if task["spec"].get("parentRef"):
        review = status.get("review") or {}
        reviewer = str(review.get("reviewer") or "")
        if review.get("decision") == "Accepted":
            return Verdict("accepted", True, reviewer=reviewer)
        if review.get("decision") == "ChangesRequested":
            rounds = int(review.get("round") or 0)
            feedback = str(review.get("lastFeedback") or "")
            return Verdict(f"round-{rounds}", False, feedback, reviewer, rounds)
        return None
    approval = task["spec"].get("approval")
    if not approval:
        return None
    generation = task["metadata"].get("generation")
    if approval.get("decision") == "Approved":
        return Verdict(f"approved-{generation}", True, reviewer="a human")
    return Verdict(f"rejected-{generation}", False, str(approval.get("feedback") or ""), "a human")
