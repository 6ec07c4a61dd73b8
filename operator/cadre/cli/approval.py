"""``cadre approve`` and ``cadre reject``: a person's verdict on a Task that waits for one
(pure: whether it waits, and the spec patch that records the verdict)."""

from __future__ import annotations

from cadre.api.task import FINAL_PHASES, Approval, ApprovalDecision, ToolApproval
from cadre.api.types import Obj


class NotAwaitingApprovalError(Exception):
    """The Task does not wait for a person's verdict; the message says what it does."""


def check_awaiting(task: Obj) -> None:
    """Raise unless the Task asked for human approval and waits for it now."""
    name = task["metadata"]["name"]
    if not ((task["spec"].get("review") or {}).get("humanApproval")):
        raise NotAwaitingApprovalError(
            f"Task {name} does not ask for human approval (spec.review.humanApproval is not"
            " set); its requester reviews it"
        )
    phase = (task.get("status") or {}).get("phase") or "Pending"
    if phase != "InReview":
        raise NotAwaitingApprovalError(
            f"Task {name} is {phase}, not InReview: there is no result to approve yet"
            if phase not in FINAL_PHASES
            else f"Task {name} already ended {phase}"
        )


def approval_patch(approved: bool, feedback: str) -> Obj:
    """The ``spec`` merge patch for the verdict (validated as the API server will)."""
    decision = ApprovalDecision.APPROVED if approved else ApprovalDecision.REJECTED
    approval = Approval(decision=decision, feedback=feedback)
    return {"approval": approval.model_dump(by_alias=True, mode="json")}


def check_call_waiting(task: Obj, call: str) -> None:
    """Raise unless the Task waits on a human for tool call ``call`` and has no answer yet."""
    name = task["metadata"]["name"]
    if call in ((task.get("spec") or {}).get("toolApprovals") or {}):
        raise NotAwaitingApprovalError(f"tool call {call} of Task {name} is already answered")
    pending = (task.get("status") or {}).get("pendingToolCalls") or {}
    if call not in pending:
        waiting = ", ".join(sorted(pending)) or "none"
        raise NotAwaitingApprovalError(
            f"Task {name} has no tool call {call} waiting for a human (waiting: {waiting})"
        )


def verdict_patch(task: Obj, call: str | None, approved: bool, feedback: str) -> Obj:
    """The ``spec`` patch answering the Task (or, with ``call``, one of its tool calls), once
    it is checked that it waits for that answer (NotAwaitingApprovalError otherwise)."""
    if call:
        check_call_waiting(task, call)
        return tool_approval_patch(call, approved, feedback)
    check_awaiting(task)
    return approval_patch(approved, feedback)


def tool_approval_patch(call: str, approved: bool, reason: str) -> Obj:
    """The ``spec`` merge patch answering one tool call (validated as the API server will)."""
    decision = ApprovalDecision.APPROVED if approved else ApprovalDecision.REJECTED
    answer = ToolApproval(decision=decision, reason=reason)
    return {"toolApprovals": {call: answer.model_dump(by_alias=True, mode="json")}}
