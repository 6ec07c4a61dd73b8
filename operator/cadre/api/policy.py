"""The ``Policy`` kind: what the Agents it selects may do with their tools, reviewed in Git like
any other object. One Policy governs a whole team (it selects Agents by label); every rule of
every Policy that selects an Agent is checked in order (Policies by name, rules as written) and
the first that matches a tool call decides: ``Allow``, ``Ask`` (a human approves the call
first) or ``Deny``. A call no rule matches takes the Policies' default for its tool."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from cadre.api.cel import CelRule
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
            rule="size(self.commands) == 0 || self.tools.all(t, t == 'bash' || t == '*')",
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


class PolicyStatus(ApiModel):
    """What the operator sees of the Policy."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` the operator last looked at."""
    selected_agents: list[DnsLabel] = Field(default_factory=list, max_length=1000)
    """The Agents this Policy governs now."""
    conditions: list[Condition] = conditions_field()
    """``Selecting``: False (``NoAgentsSelected``) when the selector matches no Agent."""


class Policy(ApiModel):
    """What the Agents it selects may do with their tools."""

    api_version: Literal["cadre.dev/v1alpha1"] = "cadre.dev/v1alpha1"
    kind: Literal["Policy"] = "Policy"
    metadata: dict[str, object] = Field(default_factory=dict)
    spec: PolicySpec
    status: PolicyStatus | None = None
