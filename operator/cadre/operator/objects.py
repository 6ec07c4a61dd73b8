"""Names, labels and owner references of the objects the operator creates.

Deterministic names make every create safe to repeat (409 AlreadyExists means done), and one
place for labels keeps selectors and the objects they select from drifting apart.
"""

from __future__ import annotations

from typing import Any

from cadre.api.meta import API_VERSION

MANAGED_BY = {"app.kubernetes.io/managed-by": "cadre", "app.kubernetes.io/part-of": "cadre"}
TASK_LABEL = "cadre.dev/task"
AGENT_LABEL = "cadre.dev/agent"
PARENT_LABEL = "cadre.dev/parent"
"""On a delegated Task: its parent's name (the harness lists a parent's children by it)."""
TEAM_LABEL = "cadre.dev/team"
"""On a delegated Task: the Team whose rules govern its tree."""
REVIEW_OF_LABEL = "cadre.dev/review-of"
"""On a review Task: the delegated Task whose delivery it inspects."""
DEPTH_ANNOTATION = "cadre.dev/depth"
DELEGATION_ANNOTATION = "cadre.dev/delegation-id"
"""The parent session's tool call that asked for the Task (what makes its creation idempotent)."""
COMPONENT_LABEL = "app.kubernetes.io/component"


def sandbox_name(task: str) -> str:
    """Pod, Service and NetworkPolicy of a Task's sandbox. The prefix makes it a valid
    DNS-1035 Service name even when the Task's name starts with a digit."""
    return f"sbx-{task}"


def sandbox_token_secret_name(task: str) -> str:
    return f"sbx-{task}-token"


def sandbox_workspace_name(task: str) -> str:
    return f"sbx-{task}-workspace"


def sandbox_labels(task: str, agent: str) -> dict[str, str]:
    """Labels of every sandbox object; computed here only, never taken from user input."""
    return {
        **MANAGED_BY,
        "app.kubernetes.io/name": "cadre-sandbox",
        COMPONENT_LABEL: "sandbox",
        TASK_LABEL: task,
        AGENT_LABEL: agent,
    }


def sandbox_selector(task: str) -> dict[str, str]:
    """Selects exactly one Task's sandbox pod."""
    return {COMPONENT_LABEL: "sandbox", TASK_LABEL: task}


def harness_name(agent: str) -> str:
    """StatefulSet, ServiceAccount, Role and RoleBinding of an Agent's harness."""
    return f"harness-{agent}"


def memory_name(agent: str) -> str:
    """The ConfigMap holding an Agent's memory (``kubectl edit configmap memory-NAME``)."""
    return f"memory-{agent}"


def harness_labels(agent: str) -> dict[str, str]:
    return {**MANAGED_BY, "app.kubernetes.io/name": "cadre-harness", **harness_selector(agent)}


def harness_selector(agent: str) -> dict[str, str]:
    """Selects the harness pod of one Agent (the only client its sandboxes accept)."""
    return {COMPONENT_LABEL: "harness", AGENT_LABEL: agent}


def owner_reference(kind: str, name: str, uid: str) -> dict[str, Any]:
    """A controller owner reference to a Cadre object, so deleting it deletes what it owns."""
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
