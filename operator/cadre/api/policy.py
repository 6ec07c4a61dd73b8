"""The ``Policy`` kind: what the Agents it selects may do with their tools, reviewed in Git like
any other object. One Policy governs a whole team (it selects Agents by label); every rule of
every Policy that selects an Agent is checked in order (Policies by name, rules as written) and
the first that matches a tool call decides: ``Allow``, ``Ask`` (a human approves the call
first) or ``Deny``. A call no rule matches takes the Policies' default for its tool."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from cadre.api.cel import CelCompileError, CelRule, compile_rule
from cadre.api.meta import ApiModel, Condition, DnsLabel, ShortText, conditions_field

Pattern = Annotated[str, StringConstraints(min_length=1, max_length=512)]
ToolName = Annotated[str, StringConstraints(min_length=1, max_length=128,
                                            pattern=r"^(\*|[A-Za-z0-9_.-]+)$")]  # fmt: skip
LabelValue = Annotated[str, StringConstraints(max_length=63), Field(description="A label value.")]


class Decision(StrEnum):
    ALLOW = "Allow"
    ASK = "Ask"
    """The call waits for a human: ``cadre approve TASK --call ID`` or the Task's
    ``spec.toolApprovals``."""
    DENY = "Deny"


class TimeoutOutcome(StrEnum):
    REJECT = "Reject"
    APPROVE = "Approve"


class LabelSelectorRequirement(ApiModel):
    """One requirement on a label, as in Kubernetes' label selectors."""

    key: Annotated[str, StringConstraints(min_length=1, max_length=317)]
    """The label's key."""
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    """How the label's value relates to ``values``."""
    values: list[LabelValue] = Field(default_factory=list, max_length=64)
    """The values for ``In`` and ``NotIn``."""


class LabelSelector(ApiModel):
    """Kubernetes' label selector; an empty one selects every Agent of the namespace."""

    match_labels: dict[str, LabelValue] = Field(default_factory=dict, max_length=64)
    """Labels the Agent must carry, with these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list,
                                                                max_length=16)  # fmt: skip
    """Further requirements, all of which must hold."""

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for requirement in self.match_expressions:
            present = requirement.key in labels
            value = labels.get(requirement.key)
            if requirement.operator == "In" and value not in requirement.values:
                return False
            if requirement.operator == "NotIn" and present and value in requirement.values:
                return False
            if requirement.operator == "Exists" and not present:
                return False
            if requirement.operator == "DoesNotExist" and present:
                return False
        return True


class ToolRule(ApiModel):
    """One rule: the tools it covers and, optionally, what their input must look like."""

    cel_rules = (
        CelRule(
            rule="!has(self.commands) || size(self.commands) == 0 || "
            "self.tools.all(t, t == 'bash' || t == '*')",
            message="commands only apply to the bash tool",
            field_path=".commands",
        ),
    )

    name: DnsLabel | None = None
    """Named in the error a denied call gets, and in the log."""
    tools: list[ToolName] = Field(min_length=1, max_length=32,
                                  json_schema_extra={"x-kubernetes-list-type": "set"})  # fmt: skip
    """Tool names (``bash``, ``read``, ..., a harness tool, an MCP tool) or ``*`` for every one."""
    commands: list[Pattern] = Field(default_factory=list, max_length=64)
    """bash only: shell-style patterns the command must match (``git push*``, ``*rm -rf*``);
    none: any command."""
    paths: list[Pattern] = Field(default_factory=list, max_length=64)
    """Patterns the input's ``path`` (or a glob/grep ``path``) must match (``secrets/*``,
    ``*.env``); none: any path, or none at all."""
    decision: Decision
    """``Allow``, ``Ask`` (a human approves the call first) or ``Deny``."""
    message: ShortText = ""
    """Why, for the model (a denied call) and for the human (a call to approve)."""


class Approval(ApiModel):
    """How long an ``Ask`` waits for a human, and what happens then."""

    timeout: Annotated[str, StringConstraints(pattern=r"^([0-9]+(\.[0-9]+)?(h|m|s))+$",
                                              max_length=32)] = "30m"  # fmt: skip
    """A Go-style duration."""
    on_timeout: TimeoutOutcome = TimeoutOutcome.REJECT
    """``Reject`` (the model is told no) or ``Approve``."""


class HookPoint(StrEnum):
    BEFORE_TOOL_CALL = "BeforeToolCall"
    """Before a tool call runs (after the model asked for it): allow, deny or rewrite its input.
    Hooks run before the tool rules, which then judge the input as rewritten."""
    AFTER_TOOL_CALL = "AfterToolCall"
    """After a tool call returned: annotate its result for the model, or stop the session."""
    BEFORE_DELIVERY = "BeforeDelivery"
    """Before a finished result leaves the Task (for review, or as its result): a hook that
    says no sends the work back to the agent with its message."""
    TASK_END = "TaskEnd"
    """When the Task has ended (webhooks only: a notice, its answer changes nothing)."""


class FailurePolicy(StrEnum):
    FAIL = "Fail"
    """A webhook that cannot be reached, times out or answers badly counts as a no."""
    IGNORE = "Ignore"
    """... counts as a yes (the failure is logged)."""


class CelHook(ApiModel):
    """An expression the harness evaluates (cel-python). Variables: ``tool`` and ``input``
    (tool points), ``result`` (``{content, isError}`` after a call; the delivered text before
    delivery), ``agent`` (``{name, labels}``) and ``task`` (``{namespace, name}``). ``true``:
    go on; ``false``: no, with ``message``; a map (BeforeToolCall): the call's new input; a
    string (AfterToolCall): a note appended to the result."""

    expression: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    """The CEL expression (checked when the Policy is read: ``HooksValid``)."""
    message: ShortText = ""
    """What the model (and the log) reads when the expression says no."""


class CommandHook(ApiModel):
    """A bash command run in the Task's sandbox, in its workspace: exit code 0 is a yes; any
    other is a no, with the command's output as the message (its last 4 KiB)."""

    command: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    """Run with bash in the workspace."""
    timeout_seconds: Annotated[int, Field(ge=1, le=600)] = 300
    """At most the bash tool's own limit."""


class WebhookHook(ApiModel):
    """An HTTPS endpoint asked as Kubernetes asks an admission webhook: a ``HookReview`` JSON
    request, and a ``HookReview`` answer with ``response.allowed`` (docs/control.md)."""

    url: Annotated[str, StringConstraints(max_length=2048, pattern=r"^https://[^\s/?#]+.*$")]
    """Must be HTTPS: the request carries the call's input and the Task's names."""
    ca_bundle: Annotated[str, StringConstraints(max_length=65536)] | None = None
    """Base64 PEM certificates that sign the endpoint's; none: the system's trusted roots."""
    timeout_seconds: Annotated[int, Field(ge=1, le=30)] = 10
    """How long one request may take."""
    failure_policy: FailurePolicy = FailurePolicy.FAIL
    """``Fail``: a failed request counts as a no; ``Ignore``: as a yes (logged either way)."""


class Hook(ApiModel):
    """One hook: where it runs and what it is (exactly one of ``cel``, ``command``,
    ``webhook``)."""

    cel_rules = (
        CelRule(
            rule="[has(self.cel), has(self.command), has(self.webhook)].filter(x, x).size() == 1",
            message="a hook is exactly one of cel, command or webhook",
        ),
        CelRule(
            rule="self.at != 'TaskEnd' || has(self.webhook)",
            message="a TaskEnd hook can only be a webhook (nothing is left to allow or deny)",
            field_path=".at",
        ),
        CelRule(
            rule="!has(self.tools) || size(self.tools) == 0 || "
            "self.at in ['BeforeToolCall', 'AfterToolCall']",
            message="tools only apply to BeforeToolCall and AfterToolCall hooks",
            field_path=".tools",
        ),
    )

    name: DnsLabel
    """Named in the log, and in the message a no gives the model."""
    at: HookPoint
    """Where the hook runs: ``BeforeToolCall``, ``AfterToolCall``, ``BeforeDelivery`` or
    ``TaskEnd``. (Not ``on``: YAML 1.1, which kubectl reads, takes ``on`` for ``true``.)"""
    tools: list[ToolName] = Field(default_factory=list, max_length=32,
                                  json_schema_extra={"x-kubernetes-list-type": "set"})  # fmt: skip
    """The tools whose calls the hook sees (tool points; none: every tool)."""
    cel: CelHook | None = None
    """An expression the harness evaluates."""
    command: CommandHook | None = None
    """A command run in the Task's sandbox."""
    webhook: WebhookHook | None = None
    """An HTTPS endpoint asked with a ``HookReview``."""


class PolicySpec(ApiModel):
    """Which Agents the Policy governs, and what their tool calls may do."""

    agent_selector: LabelSelector = Field(default_factory=LabelSelector)
    """The Agents governed, by label; empty: every Agent of the namespace."""
    tool_rules: list[ToolRule] = Field(default_factory=list, max_length=64)
    """Checked in order; the first that matches a call decides."""
    default_decision: Decision = Decision.ALLOW
    """For a call no rule of any Policy matches (the strictest of the selecting Policies'
    defaults applies)."""
    approval: Approval = Field(default_factory=Approval)
    """How long an ``Ask`` waits, and what its timeout decides."""
    hooks: list[Hook] = Field(default_factory=list, max_length=32)
    """Run at their point in order (Policies by name, hooks as written); the first no decides."""
    max_delivery_rounds: Annotated[int, Field(ge=1, le=20)] = 3
    """How often BeforeDelivery hooks may send the work back before the Task fails."""

    def invalid_hooks(self) -> list[str]:
        """``spec.hooks[i].cel.expression: why`` for each hook whose CEL does not compile (a
        CRD schema cannot check that; the operator reports it on the Policy, and the harness
        treats such a hook as a no)."""
        errors = []
        for index, hook in enumerate(self.hooks):
            if hook.cel is None:
                continue
            try:
                compile_rule(hook.cel.expression)
            except CelCompileError as err:
                errors.append(f"spec.hooks[{index}].cel.expression: {' '.join(str(err).split())}")
        return errors


class PolicyStatus(ApiModel):
    """What the operator sees of the Policy."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` the operator last looked at."""
    selected_agents: list[DnsLabel] = Field(default_factory=list, max_length=1000)
    """The Agents this Policy governs now."""
    conditions: list[Condition] = conditions_field()
    """``Selecting``: False (``NoAgentsSelected``) when the selector matches no Agent;
    ``HooksValid``: False (``InvalidExpression``) naming the hook whose CEL does not compile."""


class Policy(ApiModel):
    """What the Agents it selects may do with their tools."""

    api_version: Literal["cadre.dev/v1alpha1"] = "cadre.dev/v1alpha1"
    kind: Literal["Policy"] = "Policy"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: PolicySpec
    status: PolicyStatus | None = None
