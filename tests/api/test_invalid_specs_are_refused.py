"""Every invalid spec is refused twice, with the field named: by the pydantic models (what the
operator and CLI use) and by the CRD schema with its CEL rules (what the API server enforces)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cadre.api import Agent, Task, Team
from cadre.api.errors import describe_validation_error
from cadre.api.meta import ApiModel
from cadre.api.policy import Policy
from pydantic import ValidationError

from tests.api.crdcheck import crd_errors

MODELS: dict[str, type[ApiModel]] = {"Agent": Agent, "Team": Team, "Task": Task,
                                      "Policy": Policy}  # fmt: skip

BASE: dict[str, dict[str, Any]] = {
    "Agent": {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": "engineer"},
        "spec": {"role": "Writes code", "model": "m", "apiKeySecretRef": {"name": "key"}},
    },
    "Team": {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Team",
        "metadata": {"name": "platform"},
        "spec": {
            "lead": "lead",
            "members": [{"agent": "lead", "delegatesTo": ["eng"]}, {"agent": "eng"}],
        },
    },
    "Task": {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "fix-bug"},
        "spec": {"assignee": {"agent": "engineer"}, "prompt": "Fix the bug"},
    },
    # Optional lists left out on purpose: CEL rules must not trip on absent fields.
    "Policy": {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Policy",
        "metadata": {"name": "platform"},
        "spec": {
            "toolRules": [{"tools": ["read"], "decision": "Allow"}],
            "hooks": [
                {"name": "tests", "at": "BeforeDelivery", "command": {"command": "pytest -q"}},
                {"name": "audit", "at": "TaskEnd", "webhook": {"url": "https://audit.example"}},
            ],
        },
    },
}


@dataclass
class Case:
    id: str
    kind: str
    change: Callable[[dict[str, Any]], None]
    field: str
    """The field both validators must name."""
    words: str
    """Words both messages contain (lower case)."""


def put(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = obj
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return change


def drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = obj
        for part in parents:
            node = node[part]
        del node[last]

    return change


CASES = [
    Case("unknown-field", "Task", put("spec.priority", 5), "spec.priority", ""),
    Case("missing-assignee", "Task", drop("spec.assignee"), "spec.assignee", ""),
    Case("missing-prompt", "Task", drop("spec.prompt"), "spec.prompt", ""),
    Case(
        "two-assignees",
        "Task",
        put("spec.assignee", {"agent": "a", "team": "t"}),
        "spec.assignee",
        "exactly one of",
    ),
    Case("no-assignee", "Task", put("spec.assignee", {}), "spec.assignee", "exactly one of"),
    Case(
        "absolute-deliverable",
        "Task",
        put("spec.deliverables", ["/etc/passwd"]),
        "spec.deliverables",
        "relative to the workspace",
    ),
    Case(
        "escaping-deliverable",
        "Task",
        put("spec.deliverables", ["src/../../x"]),
        "spec.deliverables",
        "contain no '..'",
    ),
    Case(
        "too-many-deliverables",
        "Task",
        put("spec.deliverables", ["a"] * 17),
        "spec.deliverables",
        "",
    ),
    Case("negative-max-turns", "Task", put("spec.limits.maxTurns", -1), "spec.limits.maxTurns", ""),
    Case("zero-max-tokens", "Agent", put("spec.limits.maxTokens", 0), "spec.limits.maxTokens", ""),
    Case("bad-timeout", "Task", put("spec.limits.timeout", "forever"), "spec.limits.timeout", ""),
    Case(
        "cost-as-float",
        "Task",
        put("spec.limits.maxCostUSD", 2.5),
        "spec.limits.maxCostUSD",
        "string",
    ),
    Case(
        "negative-cost", "Task", put("spec.limits.maxCostUSD", "-1"), "spec.limits.maxCostUSD", ""
    ),
    Case("long-title", "Task", put("spec.title", "x" * 257), "spec.title", "256"),
    Case("long-prompt", "Task", put("spec.prompt", "x" * 65537), "spec.prompt", "65536"),
    Case("empty-prompt", "Task", put("spec.prompt", ""), "spec.prompt", ""),
    Case(
        "bad-agent-name",
        "Task",
        put("spec.assignee", {"agent": "Bad_Name"}),
        "spec.assignee.agent",
        "",
    ),
    Case("unknown-tool", "Agent", put("spec.tools", ["bash", "teleport"]), "spec.tools[1]", ""),
    Case(
        "duplicate-tool", "Agent", put("spec.tools", ["bash", "bash"]), "spec.tools[1]", "duplicate"
    ),
    Case(
        "unknown-egress-mode",
        "Agent",
        put("spec.sandbox", {"egress": {"mode": "Everything"}}),
        "spec.sandbox.egress.mode",
        "",
    ),
    Case(
        "allowlist-without-cidrs",
        "Agent",
        put("spec.sandbox", {"egress": {"mode": "AllowList"}}),
        "spec.sandbox.egress",
        "at least one",
    ),
    Case(
        "cidrs-without-allowlist",
        "Agent",
        put("spec.sandbox", {"egress": {"cidrs": ["203.0.113.0/24"]}}),
        "spec.sandbox.egress",
        "only allowed when",
    ),
    Case(
        "hosts-wildcard-everything",
        "Agent",
        put("spec.sandbox", {"egress": {"mode": "Hosts", "hosts": ["pypi.org", "*"]}}),
        "spec.sandbox.egress.hosts[1]",
        "",
    ),
    Case(
        "hosts-wildcard-tld",
        "Agent",
        put("spec.sandbox", {"egress": {"mode": "Hosts", "hosts": ["*.com"]}}),
        "spec.sandbox.egress.hosts[0]",
        "",
    ),
    Case(
        "hosts-ip-literal",
        "Agent",
        put("spec.sandbox", {"egress": {"mode": "Hosts", "hosts": ["10.0.0.5"]}}),
        "spec.sandbox.egress.hosts[0]",
        "",
    ),
    Case(
        "hosts-without-a-host",
        "Agent",
        put("spec.sandbox", {"egress": {"mode": "Hosts"}}),
        "spec.sandbox.egress",
        "at least one",
    ),
    Case(
        "egress-credential-unknown-scheme",
        "Agent",
        put(
            "spec.sandbox",
            {
                "egress": {
                    "mode": "Hosts",
                    "hosts": ["github.com"],
                    "credentials": [
                        {"host": "github.com", "secretRef": {"name": "gh"}, "scheme": "Digest"}
                    ],
                }
            },
        ),
        "spec.sandbox.egress.credentials[0].scheme",
        "",
    ),
    Case(
        "egress-credential-for-an-unlisted-host",
        "Agent",
        put(
            "spec.sandbox",
            {
                "egress": {
                    "mode": "Hosts",
                    "hosts": ["*.github.com"],
                    "credentials": [
                        {"host": "api.github.com", "secretRef": {"name": "gh"}, "scheme": "Bearer"}
                    ],
                }
            },
        ),
        "spec.sandbox.egress",
        "must be listed",
    ),
    Case(
        "egress-credential-header-without-a-name",
        "Agent",
        put(
            "spec.sandbox",
            {
                "egress": {
                    "mode": "Hosts",
                    "hosts": ["pypi.internal"],
                    "credentials": [
                        {"host": "pypi.internal", "secretRef": {"name": "p"}, "scheme": "Header"}
                    ],
                }
            },
        ),
        "spec.sandbox.egress.credentials[0]",
        "needs header",
    ),
    Case(
        "zero-concurrency",
        "Agent",
        put("spec.maxConcurrentTasks", 0),
        "spec.maxConcurrentTasks",
        "",
    ),
    Case("missing-model", "Agent", drop("spec.model"), "spec.model", ""),
    Case("bad-base-url", "Agent", put("spec.baseURL", "ftp://example"), "spec.baseURL", ""),
    Case("long-agent-name", "Agent", put("metadata.name", "a" * 41), "", "at most 40 characters"),
    Case("long-task-name", "Task", put("metadata.name", "t" * 53), "", "at most 52 characters"),
    Case("lead-not-member", "Team", put("spec.lead", "boss"), "spec.lead", "spec.lead must be"),
    Case(
        "delegate-to-stranger",
        "Team",
        put("spec.members", [{"agent": "lead", "delegatesTo": ["ghost"]}]),
        "spec.members",
        "must name a member",
    ),
    Case(
        "delegate-to-self",
        "Team",
        put("spec.members", [{"agent": "lead", "delegatesTo": ["lead"]}]),
        "spec.members[0]",
        "itself",
    ),
    Case(
        "duplicate-member",
        "Team",
        put("spec.members", [{"agent": "lead"}, {"agent": "lead"}]),
        "spec.members[1]",
        "duplicate",
    ),
    Case("no-members", "Team", put("spec.members", []), "spec.members", ""),
    Case(
        "reviewer-not-member",
        "Team",
        put("spec.review", {"reviewer": "outsider"}),
        "spec.review",
        "reviewer must be",
    ),
    Case(
        "depth-too-deep",
        "Team",
        put("spec.delegation", {"maxDepth": 11}),
        "spec.delegation.maxDepth",
        "",
    ),
    Case(
        "bad-condition-reason",
        "Task",
        put(
            "status",
            {
                "conditions": [
                    {
                        "type": "Succeeded",
                        "status": "True",
                        "reason": "all done",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ]
            },
        ),
        "status.conditions[0].reason",
        "",
    ),
    Case("unknown-phase", "Task", put("status", {"phase": "Paused"}), "status.phase", ""),
    Case(
        "mcp-credential-over-http",
        "Agent",
        put(
            "spec.mcpServers",
            [
                {
                    "name": "tickets",
                    "url": "http://tickets.svc/mcp",
                    "credential": {"secretRef": {"name": "t"}},
                }
            ],
        ),
        "spec.mcpServers[0].url",
        "only sent over https",
    ),
    Case(
        "duplicate-mcp-server",
        "Agent",
        put(
            "spec.mcpServers",
            [{"name": "a", "url": "https://a/mcp"}, {"name": "a", "url": "https://b/mcp"}],
        ),
        "spec.mcpServers[1]",
        "duplicate",
    ),
    Case(
        "commands-on-read",
        "Policy",
        put("spec.toolRules", [{"tools": ["read"], "commands": ["x*"], "decision": "Deny"}]),
        "spec.toolRules[0].commands",
        "only apply to the bash tool",
    ),
    Case(
        "webhook-not-https",
        "Policy",
        put(
            "spec.hooks",
            [
                {
                    "name": "w",
                    "at": "BeforeToolCall",
                    "webhook": {"url": "http://hooks.example/check"},
                }
            ],
        ),
        "spec.hooks[0].webhook.url",
        "",
    ),
    Case(
        "hook-of-two-kinds",
        "Policy",
        put(
            "spec.hooks",
            [
                {
                    "name": "w",
                    "at": "BeforeToolCall",
                    "cel": {"expression": "true"},
                    "command": {"command": "true"},
                }
            ],
        ),
        "spec.hooks[0]",
        "exactly one of cel, command or webhook",
    ),
    Case(
        "cel-at-task-end",
        "Policy",
        put("spec.hooks", [{"name": "w", "at": "TaskEnd", "cel": {"expression": "true"}}]),
        "spec.hooks[0].at",
        "only be a webhook",
    ),
    Case(
        "tools-before-delivery",
        "Policy",
        put(
            "spec.hooks",
            [
                {
                    "name": "w",
                    "at": "BeforeDelivery",
                    "tools": ["bash"],
                    "command": {"command": "true"},
                }
            ],
        ),
        "spec.hooks[0].tools",
        "only apply to",
    ),
    Case(
        "unknown-hook-point",
        "Policy",
        put("spec.hooks", [{"name": "w", "at": "Whenever", "cel": {"expression": "true"}}]),
        "spec.hooks[0].at",
        "",
    ),
]


def invalid(case: Case) -> dict[str, Any]:
    obj = copy.deepcopy(BASE[case.kind])
    case.change(obj)
    return obj


@pytest.mark.parametrize("kind", sorted(BASE))
def test_the_base_objects_are_valid_both_ways(
    kind: str, crds_by_kind: dict[str, dict[str, Any]]
) -> None:
    MODELS[kind].model_validate(BASE[kind])
    assert crd_errors(crds_by_kind[kind], BASE[kind]) == []


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_pydantic_refuses_and_names_the_field(case: Case) -> None:
    with pytest.raises(ValidationError) as caught:
        MODELS[case.kind].model_validate(invalid(case))
    lines = describe_validation_error(caught.value)
    assert any(
        line.startswith(case.field or "<root>") and case.words in line.lower() for line in lines
    ), lines


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_crd_refuses_and_names_the_field(
    case: Case, crds_by_kind: dict[str, dict[str, Any]]
) -> None:
    errors = crd_errors(crds_by_kind[case.kind], invalid(case))
    field = case.field or "<nil>"
    assert any(
        (e.startswith(field) or e.startswith(f'unknown field "{field}')) and case.words in e.lower()
        for e in errors
    ), errors


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (put("spec.prompt", "Something else"), "spec.prompt is immutable"),
        (put("spec.assignee", {"agent": "other"}), "spec.assignee is immutable"),
        (
            put("spec.parentRef", {"name": "adopted"}),
            "spec.parentref is immutable",
        ),
    ],
)
def test_transition_rules_refuse_changing_fixed_fields(
    change: Callable[[dict[str, Any]], None], words: str, crds_by_kind: dict[str, dict[str, Any]]
) -> None:
    old = copy.deepcopy(BASE["Task"])
    new = copy.deepcopy(old)
    change(new)
    errors = crd_errors(crds_by_kind["Task"], new, old)
    assert any(words in e.lower() for e in errors), errors


def test_cancel_cannot_be_undone(crds_by_kind: dict[str, dict[str, Any]]) -> None:
    old = copy.deepcopy(BASE["Task"])
    old["spec"]["cancel"] = True
    new = copy.deepcopy(old)
    new["spec"]["cancel"] = False
    assert any("cannot be set back" in e for e in crd_errors(crds_by_kind["Task"], new, old))
    new["spec"]["cancel"] = True
    assert crd_errors(crds_by_kind["Task"], new, old) == []


def test_mutable_fields_may_change(crds_by_kind: dict[str, dict[str, Any]]) -> None:
    old = copy.deepcopy(BASE["Task"])
    new = copy.deepcopy(old)
    new["spec"]["limits"] = {"maxTurns": 5}
    new["spec"]["approval"] = {"decision": "Approved"}
    assert crd_errors(crds_by_kind["Task"], new, old) == []
