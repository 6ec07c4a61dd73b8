"""Policies, seen from the operator: which Agents each one selects (its status, and a
``Selecting=False`` condition when it selects none, so a typo in a selector shows), and, for
each Agent, which Policies govern it (``status.policies``, from a kopf index: no request).
A hook whose CEL does not compile shows as ``HooksValid=False`` naming the field. The harness,
not the operator, enforces them (docs/control.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import kopf

from cadre.api.conditions import merge_condition
from cadre.api.meta import GROUP, VERSION
from cadre.api.policy import LabelSelector, PolicySpec
from cadre.operator import apply
from cadre.operator.settings import BACKOFF


@kopf.index(GROUP, VERSION, "policies")
def policy_selectors(
    namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[str, tuple[str, dict[str, Any]]] | None:
    """Each Policy's selector by namespace, kept in memory from kopf's watch."""
    if namespace is None:
        return None
    return {namespace: (name, dict(spec.get("agentSelector") or {}))}


def policies_for(index: Any, namespace: str, labels: dict[str, str]) -> list[str]:
    """The names of the Policies of ``namespace`` whose selector matches ``labels``."""
    if namespace not in index:
        return []
    return sorted(
        name
        for name, selector in index[namespace]
        if LabelSelector.model_validate(selector).matches(labels)
    )


@kopf.timer(GROUP, VERSION, "policies", interval=3.0, id="policy-selects", backoff=BACKOFF)
def refresh_policy_status(
    spec: kopf.Spec, namespace: str | None, meta: kopf.Meta, status: kopf.Status,
    patch: kopf.Patch, **_: Any,
) -> None:  # fmt: skip
    assert namespace is not None  # Policies are namespaced
    parsed = PolicySpec.model_validate(dict(spec))
    selector = parsed.agent_selector
    selected = sorted(
        name for name, agent in apply.list_agents(namespace).items()
        if selector.matches(agent["metadata"].get("labels") or {})
    )  # fmt: skip
    ok = bool(selected)
    message = (f"selects {len(selected)} Agent(s)" if ok else
               "the agentSelector matches no Agent in this namespace")  # fmt: skip
    invalid = parsed.invalid_hooks()
    hooks_message = "; ".join(invalid)[:1024] if invalid else "every hook's expression compiles"
    current = list(status.get("conditions") or [])
    wanted = {"Selecting": message, "HooksValid": hooks_message}
    if status.get("selectedAgents") == selected and all(
        any(c.get("type") == kind and c.get("message") == text for c in current)
        for kind, text in wanted.items()
    ):
        return
    now, generation = datetime.now(UTC), meta.get("generation")
    patch.status["selectedAgents"] = selected
    patch.status["observedGeneration"] = generation
    conditions = merge_condition(
        current, "Selecting", ok, "AgentsSelected" if ok else "NoAgentsSelected", message,
        now=now, observed_generation=generation,
    )  # fmt: skip
    patch.status["conditions"] = merge_condition(
        conditions, "HooksValid", not invalid, "InvalidExpression" if invalid else "Compiled",
        hooks_message, now=now, observed_generation=generation,
    )  # fmt: skip
