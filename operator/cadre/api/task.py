"""The ``Task`` kind: a piece of work for an Agent or a Team, run as one durable session."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from cadre.api.cel import CelRule
from cadre.api.limits import Limits
from cadre.api.meta import (
    ApiModel,
    Condition,
    ObjectName,
    ShortText,
    UsdAmount,
    conditions_field,
)
from cadre.api.types import Obj

MAX_TASK_NAME = 52
"""Task names end up in the sandbox's Pod, Service and Secret names, so they leave room."""
MAX_DELIVERABLE_PATTERNS = 16
MAX_DELIVERY_BYTES = 64 * 1024
"""Text of the files one delivery hands over, in all: it travels in the Task's status."""

DeliverablePattern = Annotated[str, StringConstraints(min_length=1, max_length=256)]
"""A glob relative to the workspace (``src/**/*.py``, ``README.md``)."""


def _relative_patterns(field: str) -> CelRule:
    return CelRule(
        rule=f"!has(self.{field}) || self.{field}.all(p, !p.startsWith('/') && "
        "!p.matches('(^|/)[.][.](/|$)'))",
        message=f"{field}: patterns are relative to the workspace and contain no '..'",
        field_path=f".{field}",
    )


class TaskPhase(StrEnum):
    """Where a Task is in its life, for people; programs read the ``Succeeded`` condition."""

    PENDING = "Pending"
    """Accepted or waiting for a free slot; no model call yet."""
    RUNNING = "Running"
    """The session is working."""
    WAITING = "Waiting"
    """The session waits on delegated child Tasks and holds no sandbox."""
    IN_REVIEW = "InReview"
    """A deliverable exists and waits for the requester, the reviewer or a human."""
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


FINAL_PHASES: frozenset[str] = frozenset(
    {TaskPhase.SUCCEEDED, TaskPhase.FAILED, TaskPhase.CANCELLED}
)
"""Phases a Task never leaves."""

INFRASTRUCTURE_FAILURES = frozenset(
    {
        "ModelError",
        "ModelRateLimited",
        "ModelOverloaded",
        "ModelStreamInterrupted",
        "ModelUnreachable",
        "SandboxUnavailable",
        "SessionLogDamaged",
    }
)
"""Reasons a Task fails for something outside its work (the model API, the sandbox pod, the
harness's volume). Nothing about the work is learned from them: no lesson goes into memory."""


class Assignee(ApiModel):
    """Who works the Task: exactly one of an Agent or a Team (whose lead takes it)."""

    cel_rules = (
        CelRule(
            rule="has(self.agent) != has(self.team)",
            message="exactly one of spec.assignee.agent or spec.assignee.team must be set",
        ),
    )

    agent: ObjectName | None = None
    """An Agent in the Task's namespace."""
    team: ObjectName | None = None
    """A Team in the Task's namespace; its lead works the Task."""


class ParentReference(ApiModel):
    """The Task that delegated this one."""

    name: ObjectName
    """The parent Task's name."""
    uid: Annotated[str, StringConstraints(max_length=64)] | None = None
    """The parent Task's uid, so a re-created parent of the same name is not confused with it."""
    agent: ObjectName | None = None
    """The parent's Agent: the requester, who reviews the result. Besides this Task's own
    Agent, only its harness (and the Team's reviewer's) may write this Task's ``status.review``
    (the chart's ValidatingAdmissionPolicy)."""


class TaskReview(ApiModel):
    """Per-Task overrides of the Team's review settings."""

    human_approval: bool | None = None
    """Wait ``InReview`` for ``cadre approve`` or ``cadre reject`` before succeeding."""
    max_rounds: Annotated[int, Field(ge=1, le=10)] | None = None
    """Rounds of requested changes before the Task ends Failed."""
    reviewer: ObjectName | None = None
    """The Team's reviewer, who inspects each delivery before the requester does (set by the
    operator on delegated Tasks of a Team that names one)."""


class ReviewTarget(ApiModel):
    """The delivery a review Task inspects."""

    task: ObjectName
    """The delegated Task that delivered."""
    delivery: Annotated[int, Field(ge=1)]
    """Which of its deliveries (``status.review.deliveries`` when it was made)."""


class ApprovalDecision(StrEnum):
    """A human's verdict on a Task waiting for approval."""

    APPROVED = "Approved"
    REJECTED = "Rejected"


class Approval(ApiModel):
    """A human's verdict, written by ``cadre approve|reject`` or ``kubectl patch``."""

    decision: ApprovalDecision
    """``Approved`` ends the Task Succeeded; ``Rejected`` sends the feedback back to the agent."""
    feedback: Annotated[str, StringConstraints(max_length=8192)] = ""
    """What to change, when rejecting."""


class ToolApproval(ApiModel):
    """A human's answer to a tool call a Policy asks about."""

    decision: ApprovalDecision
    """``Approved`` runs the call; ``Rejected`` gives the model an error naming the reason."""
    reason: Annotated[str, StringConstraints(max_length=2048)] = ""
    """Why: the model reads it when the call is rejected; kept in the session log."""


class PendingToolCall(ApiModel):
    """A tool call waiting for a human (a Policy's ``Ask``)."""

    tool: Annotated[str, StringConstraints(max_length=128)]
    """The tool called (``bash``, ``write``, ...)."""
    input: Annotated[str, StringConstraints(max_length=2048)] = ""
    """The call's input as JSON, cut at 2 KiB (the whole input is in the session log)."""
    policy: ObjectName | None = None
    """The Policy whose rule asks."""
    rule: Annotated[str, StringConstraints(max_length=128)] = ""
    """The rule's name, or its position (``rule 2``)."""
    message: Annotated[str, StringConstraints(max_length=256)] = ""
    """The rule's message: what the human should look at."""
    since: datetime | None = None
    """When the call started waiting."""
    deadline: datetime | None = None
    """When the Policy's ``onTimeout`` answers it."""


class TaskSpec(ApiModel):
    """The desired state of a Task. Only ``cancel``, ``approval``, ``toolApprovals`` and
    ``limits`` may change (an answer in ``toolApprovals`` only be added)."""

    cel_rules = (
        CelRule(rule="self.prompt == oldSelf.prompt", message="spec.prompt is immutable"),
        CelRule(rule="self.assignee == oldSelf.assignee", message="spec.assignee is immutable"),
        CelRule(
            rule="has(self.parentRef) == has(oldSelf.parentRef) && "
            "(!has(self.parentRef) || self.parentRef == oldSelf.parentRef)",
            message="spec.parentRef is immutable",
        ),
        CelRule(
            rule="oldSelf.toolApprovals.all(k, k in self.toolApprovals && "
            "self.toolApprovals[k] == oldSelf.toolApprovals[k])",
            message="spec.toolApprovals: an answer cannot be changed or taken back",
            field_path=".toolApprovals",
        ),
        CelRule(
            rule="!oldSelf.cancel || self.cancel",
            message="spec.cancel cannot be set back to false",
        ),
        _relative_patterns("deliverables"),
    )

    assignee: Assignee
    """Who works the Task."""
    title: ShortText = ""
    """A short name for trees and tables; defaults to the start of the prompt."""
    prompt: Annotated[str, StringConstraints(min_length=1, max_length=65536)]
    """What to do: the first user message of the session."""
    acceptance_criteria: Annotated[str, StringConstraints(max_length=8192)] = ""
    """How the requester will judge the deliverable; the reviewer checks against it."""
    parent_ref: ParentReference | None = None
    """Set by the operator on a delegated Task; absent on a top-level one."""
    deliverables: list[DeliverablePattern] = Field(
        default_factory=list, max_length=MAX_DELIVERABLE_PATTERNS
    )
    """Workspace files (globs) handed to the requester with the result, text only, at most
    64 KiB in all; on a delegated Task, what the requester asked for."""
    review_of: ReviewTarget | None = None
    """Set by the operator on the Task it gives a Team's reviewer: the delivery to inspect."""
    limits: Limits = Field(default_factory=Limits)
    """Overrides of the Agent's limits for this Task."""
    review: TaskReview = Field(default_factory=TaskReview)
    """Overrides of the Team's review settings."""
    cancel: bool = False
    """Set to true to stop the session; the Task ends Cancelled. Cannot be undone."""
    approval: Approval | None = None
    """A human's verdict while the Task waits for approval."""
    tool_approvals: dict[str, ToolApproval] = Field(
        default_factory=dict, json_schema_extra={"maxProperties": 64}
    )
    """Answers to tool calls waiting for a human, by call id (``cadre approve TASK --call
    ID``, or a merge patch); each is applied once."""


class Usage(ApiModel):
    """Tokens, turns and cost of the session so far."""

    turns: Annotated[int, Field(ge=0)] = 0
    """Model calls made."""
    input_tokens: Annotated[int, Field(ge=0)] = 0
    """Uncached input tokens."""
    output_tokens: Annotated[int, Field(ge=0)] = 0
    """Output tokens."""
    cache_read_input_tokens: Annotated[int, Field(ge=0)] = 0
    """Input tokens served from the prompt cache."""
    cache_creation_input_tokens: Annotated[int, Field(ge=0)] = 0
    """Input tokens written to the prompt cache."""
    cost_usd: UsdAmount = Field(default="0", alias="costUSD")
    """Cost in US dollars, from the price table."""
    compactions: Annotated[int, Field(ge=0)] = 0
    """Times the conversation was compacted to stay within the context window."""
    context_tokens: Annotated[int, Field(ge=0)] = 0
    """Input tokens of the latest model call: how full the context window is."""
    model_errors: Annotated[int, Field(ge=0)] = 0
    """Model calls that failed after the SDK's own retries (rate limits, overload, server
    errors, cut streams) and were tried again by the harness."""


class SessionStatus(ApiModel):
    """The session behind the Task; its full log stays on the harness's volume, not here."""

    sandbox_requested: bool = False
    """Set by the harness when the first tool call needs hands; the operator then builds one."""
    sandbox_token_sha256: (
        Annotated[str, StringConstraints(min_length=64, max_length=64, pattern=r"^[0-9a-f]{64}$")]
        | None
    ) = Field(default=None, alias="sandboxTokenSHA256")
    """SHA-256 of the bearer token the harness presents to the sandbox, set with the request.
    The sandbox gets only this digest; the token itself never leaves the harness."""
    sandbox_pod: ObjectName | None = None
    """The sandbox pod, while one exists."""
    sandbox_ready: bool = False
    """Whether the sandbox answers tool calls."""
    sandbox_address: (
        Annotated[str, StringConstraints(max_length=64, pattern=r"^[0-9A-Fa-f.:\[\]]+:[0-9]{1,5}$")]
        | None
    ) = None
    """``IP:port`` of the sandbox pod, set by the operator once it is ready. The harness calls
    the pod directly, so it needs no right to read pods or resolve Service names."""
    attempts: Annotated[int, Field(ge=0)] = 0
    """Times a harness took up the session."""
    resumes: Annotated[int, Field(ge=0)] = 0
    """Times the session was resumed from its log after an interruption."""
    last_activity_time: datetime | None = None
    """When the session last logged an event."""


class ChildrenStatus(ApiModel):
    """Counts of the Tasks this one delegated."""

    total: Annotated[int, Field(ge=0)] = 0
    """Child Tasks created."""
    active: Annotated[int, Field(ge=0)] = 0
    """Child Tasks not finished yet."""
    succeeded: Annotated[int, Field(ge=0)] = 0
    """Child Tasks that succeeded."""
    failed: Annotated[int, Field(ge=0)] = 0
    """Child Tasks that failed or were cancelled."""
    cost_usd: UsdAmount = Field(default="0", alias="costUSD")
    """What the Tasks below this one cost so far: delegated Tasks and reviews of this one's
    deliveries, each with everything below it. With ``usage.costUSD``, the tree's spend that
    ``maxCostUSD`` caps."""


class ReviewDecision(StrEnum):
    """The requester's verdict on a delivered result."""

    ACCEPTED = "Accepted"
    """The Task ends Succeeded."""
    CHANGES_REQUESTED = "ChangesRequested"
    """The session reopens with the feedback (or ends Failed past ``maxRounds``)."""


class ReviewStatus(ApiModel):
    """Where the deliverable is in review; the verdict fields are written by the requester's
    harness, ``deliveries`` by the working one (a merge patch keeps both)."""

    round: Annotated[int, Field(ge=0)] = 0
    """Rounds of requested changes so far."""
    deliveries: Annotated[int, Field(ge=0)] = 0
    """Results the working session delivered so far (written by its harness); a delivery
    waits for a verdict while ``round`` is below it."""
    decision: ReviewDecision | None = None
    """The latest verdict; unset while the first delivery is awaited."""
    reviewer: ObjectName | None = None
    """The Agent that gave the latest verdict."""
    last_feedback: Annotated[str, StringConstraints(max_length=8192)] = ""
    """The most recent request for changes."""
    screened: Annotated[int, Field(ge=0)] = 0
    """Deliveries past the Team's reviewer (``spec.review.reviewer``); until the latest one is,
    the requester does not see it."""
    passed: Annotated[int, Field(ge=0)] = 0
    """The latest delivery the reviewer itself passed (a review that ended without a verdict
    lets its delivery through unscreened: then ``screened`` moves and this does not)."""


class DelegationState(StrEnum):
    """Where a delegation request is."""

    CREATED = "Created"
    """The operator created the child Task."""
    REFUSED = "Refused"
    """The Team's rules forbid it; ``message`` says which."""


MAX_DELEGATION_INSTRUCTIONS = 16384


class DelegationRequest(ApiModel):
    """A delegation asked for by the session (keyed by its tool call id), answered by the
    operator, which alone creates child Tasks and enforces the Team's rules."""

    cel_rules = (_relative_patterns("deliverables"),)

    agent: ObjectName
    """The teammate asked to do the work."""
    title: ShortText = ""
    """A short name for the child Task."""
    deliverables: list[DeliverablePattern] = Field(
        default_factory=list, max_length=MAX_DELIVERABLE_PATTERNS
    )
    """Files the requester wants back with the result (globs in the teammate's workspace)."""
    instructions: Annotated[str, StringConstraints(max_length=MAX_DELEGATION_INSTRUCTIONS)] = ""
    """What to do; cleared by the operator once it is in the child's ``spec.prompt``."""
    acceptance_criteria: Annotated[str, StringConstraints(max_length=8192)] = ""
    """How the result will be judged; cleared once in the child's spec."""
    state: DelegationState | None = None
    """Unset while the operator has not answered."""
    child: ObjectName | None = None
    """The child Task, once created."""
    message: Annotated[str, StringConstraints(max_length=1024)] = ""
    """Why a request was refused."""


class DeliveredFile(ApiModel):
    """A file handed to the requester with the result."""

    path: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    """Path relative to the workspace."""
    size_bytes: Annotated[int, Field(ge=0)]
    """Size in bytes."""
    content: Annotated[str, StringConstraints(max_length=MAX_DELIVERY_BYTES)] = ""
    """The file's text, which the requester's harness writes into its own workspace."""


class TaskResult(ApiModel):
    """A bounded summary of the deliverable; the full transcript stays in the session log."""

    summary: Annotated[str, StringConstraints(max_length=4096)] = ""
    """The agent's final answer, cut to 4 KiB."""
    truncated: bool = False
    """Whether ``summary`` was cut."""
    files: list[DeliveredFile] = Field(default_factory=list, max_length=64)
    """Files delivered from the workspace (``spec.deliverables``)."""
    files_omitted: list[Annotated[str, StringConstraints(max_length=1024)]] = Field(
        default_factory=list, max_length=32
    )
    """Deliverables left out, each with the reason (no match, binary, over the size limit)."""


class TaskStatus(ApiModel):
    """The observed state of a Task."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` the operator last acted on."""
    phase: TaskPhase = TaskPhase.PENDING
    """Pending, Running, Waiting, InReview, Succeeded, Failed or Cancelled."""
    conditions: list[Condition] = conditions_field()
    """``Accepted`` (an Agent took it) and ``Succeeded`` (Unknown while running)."""
    agent: ObjectName | None = None
    """The Agent working the Task (the lead, for a Team)."""
    parent: ObjectName | None = None
    """The Task this one works for: the one that delegated it, or the one whose delivery it
    reviews (the PARENT column; set by the operator)."""
    depth: Annotated[int, Field(ge=0, le=10)] = 0
    """0 for a top-level Task, parent's depth + 1 for a delegated one."""
    start_time: datetime | None = None
    """When the session started."""
    completion_time: datetime | None = None
    """When the Task reached a final phase."""
    session: SessionStatus = Field(default_factory=SessionStatus)
    """The session behind the Task."""
    usage: Usage = Field(default_factory=Usage)
    """Tokens, turns and cost."""
    limits: Limits | None = None
    """The limits the session runs under: the Agent's, narrowed (never widened) by the Task's."""
    children: ChildrenStatus = Field(default_factory=ChildrenStatus)
    """Delegated Tasks."""
    review: ReviewStatus = Field(default_factory=ReviewStatus)
    """Review rounds."""
    team: ObjectName | None = None
    """The Team whose rules govern this Task's delegation tree."""
    delegations: dict[str, DelegationRequest] = Field(
        default_factory=dict, json_schema_extra={"maxProperties": 100}
    )
    """Delegation requests by the session's tool call id (a map, so the harness and the
    operator each merge-patch their own fields of one entry without clobbering the other's)."""
    result: TaskResult | None = None
    """The deliverable's summary, once there is one."""
    pending_tool_calls: dict[str, PendingToolCall] = Field(
        default_factory=dict, json_schema_extra={"maxProperties": 16}
    )
    """Tool calls waiting for a human, by call id (the session waits, holding no sandbox)."""
    waiting_for: Annotated[str, StringConstraints(max_length=256)] = ""
    """What the Task waits for, in a word or two (the WAITING-FOR column)."""


class Task(ApiModel):
    """A piece of work for an Agent or a Team."""

    cel_rules = (
        CelRule(
            rule=f"!has(self.metadata.name) || size(self.metadata.name) <= {MAX_TASK_NAME}",
            message=f"Task names are at most {MAX_TASK_NAME} characters: they name the "
            "sandbox's Pod, Service and Secret",
        ),
    )

    api_version: Literal["cadre.dev/v1alpha1"] = "cadre.dev/v1alpha1"
    kind: Literal["Task"] = "Task"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: TaskSpec
    status: TaskStatus | None = None


def parent_of(task: Obj) -> str | None:
    """The Task this one works for: its delegating Task, or the Task whose delivery it
    reviews (review Tasks count under it, cost included)."""
    spec = task["spec"]
    return (spec.get("parentRef") or {}).get("name") or (spec.get("reviewOf") or {}).get("task")


def tree_cost(task: Obj) -> Decimal:
    """What a Task and everything below it (delegated Tasks, reviews) cost so far (pure)."""
    status = task.get("status") or {}
    own = (status.get("usage") or {}).get("costUSD") or "0"
    below = (status.get("children") or {}).get("costUSD") or "0"
    return Decimal(str(own)) + Decimal(str(below))
