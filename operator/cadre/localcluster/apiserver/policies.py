"""ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, GA since Kubernetes 1.30), as
kube-apiserver evaluates it, so the policies Cadre ships are tested for real here.

A policy applies to a request when a binding names it and both the policy's
``matchConstraints`` and the binding's ``matchResources`` select the request (resource rules
with operations, groups, versions and resources including ``*/status``-style subresources,
exclusions, namespace and object label selectors); then its ``matchConditions`` must all hold,
its ``variables`` are computed in order, and each of its ``validations`` is a CEL expression
over ``object``, ``oldObject``, ``request`` (with ``userInfo``), ``params``,
``namespaceObject`` and ``variables``. A failed validation denies the request (binding action
``Deny``; ``Warn`` answers a warning instead, ``Audit`` only logs), with kube-apiserver's
message and the validation's ``reason`` (default ``Invalid``, 422). An expression that errors
follows ``failurePolicy`` (``Fail`` by default: deny).

Simpler than Kubernetes: ``paramKind``/``paramRef`` are not supported (a binding naming
params is refused when created, not silently ignored), expressions are not type-checked
before they run (only parsed at creation), and the ``authorizer`` variable is absent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from celpy import celtypes
from celpy.adapter import json_to_cel

from cadre.api.cel import CelCompileError, compile_rule
from cadre.api.types import Obj
from cadre.localcluster.apiserver.authn import User
from cadre.localcluster.apiserver.crdschema import FieldError
from cadre.localcluster.apiserver.selectors import label_selector_matches
from cadre.localcluster.apiserver.status import ApiError
from cadre.localcluster.apiserver.store import Store

log = logging.getLogger(__name__)
GROUP = "admissionregistration.k8s.io"
POLICIES = (GROUP, "validatingadmissionpolicies")
BINDINGS = (GROUP, "validatingadmissionpolicybindings")
_CODES = {"Unauthorized": 401, "Forbidden": 403, "Invalid": 422, "RequestEntityTooLarge": 413}


@dataclass(frozen=True)
class AdmissionRequest:
    """What a write does, as admission sees it (after defaulting and schema validation)."""

    operation: str
    """CREATE, UPDATE or DELETE."""
    group: str
    version: str
    resource: str
    subresource: str
    kind: str
    namespace: str
    name: str
    user: User
    obj: Obj | None
    old: Obj | None

    def to_cel(self) -> Obj:
        return {
            "operation": self.operation,
            "userInfo": self.user.to_user_info(),
            "namespace": self.namespace,
            "name": self.name,
            "subResource": self.subresource,
            "resource": {"group": self.group, "version": self.version, "resource": self.resource},
            "kind": {"group": self.group, "version": self.version, "kind": self.kind},
            "requestKind": {"group": self.group, "version": self.version, "kind": self.kind},
            "dryRun": False,
        }


# ---------------------------------------------------------------------------------------------
# Matching


def _listed(wanted: str, listed: list[str]) -> bool:
    return "*" in listed or wanted in listed


def _resource_listed(req: AdmissionRequest, resources: list[str]) -> bool:
    """Kubernetes' forms: ``tasks``, ``*`` (every resource, no subresource), ``tasks/status``,
    ``tasks/*`` (every subresource of tasks), ``*/status``, ``*/*`` (everything)."""
    for entry in resources:
        base, _, sub = entry.partition("/")
        if base not in ("*", req.resource):
            continue
        if not sub and not req.subresource:
            return True
        if sub and req.subresource and sub in ("*", req.subresource):
            return True
        if entry == "*/*":
            return True
    return False


def _rule_matches(rule: Obj, req: AdmissionRequest) -> bool:
    scope = rule.get("scope", "*")
    if scope == "Namespaced" and not req.namespace:
        return False
    if scope == "Cluster" and req.namespace:
        return False
    return (
        _listed(req.operation, rule.get("operations") or [])
        and _listed(req.group, rule.get("apiGroups") or [])
        and _listed(req.version, rule.get("apiVersions") or [])
        and _resource_listed(req, rule.get("resources") or [])
    )


def resources_match(match: Obj | None, req: AdmissionRequest, namespace_labels: Obj) -> bool:
    """``matchConstraints`` of a policy, or ``matchResources`` of a binding (None: all)."""
    if match is None:
        return True
    rules = match.get("resourceRules")
    if rules is not None and not any(_rule_matches(r, req) for r in rules):
        return False
    if any(_rule_matches(r, req) for r in match.get("excludeResourceRules") or []):
        return False
    namespaces = match.get("namespaceSelector")
    if req.namespace and not label_selector_matches(namespaces, namespace_labels):
        return False
    labels = ((req.obj or req.old or {}).get("metadata") or {}).get("labels") or {}
    return label_selector_matches(match.get("objectSelector"), labels)


# ---------------------------------------------------------------------------------------------
# Evaluation


class _EvaluationError(Exception):
    pass


def _evaluate(expression: str, activation: dict[str, Any]) -> Any:
    try:
        result = compile_rule(expression).evaluate(activation)
    except CelCompileError as err:
        raise _EvaluationError(f"compilation failed: {err}") from err
    except Exception as err:  # cel-python raises its evaluation errors as several types
        raise _EvaluationError(str(err)) from err
    if isinstance(result, Exception):  # cel-python returns some errors as values
        raise _EvaluationError(str(result))
    return result


def _truth(value: Any, expression: str) -> bool:
    if isinstance(value, celtypes.BoolType | bool):
        return bool(value)
    raise _EvaluationError(f"expression {expression!r} did not evaluate to a bool")


def compile_errors(policy: Obj) -> list[FieldError]:
    """Every expression of a policy that does not parse, named by field (422 at create)."""
    spec = policy.get("spec") or {}
    found: list[FieldError] = []
    fields = [
        ("matchConditions", "expression"),
        ("variables", "expression"),
        ("validations", "expression"),
        ("validations", "messageExpression"),
    ]
    for section, key in fields:
        for index, item in enumerate(spec.get(section) or []):
            expression = item.get(key)
            if not expression:
                continue
            try:
                compile_rule(expression)
            except CelCompileError as err:
                path = f"spec.{section}[{index}].{key}"
                found.append(FieldError(path, "Invalid value", f"compilation failed: {err}"))
    return found


class Policies:
    """The policies and bindings in the store, applied to a request (``check``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def check(self, req: AdmissionRequest) -> list[str]:
        """Warnings to answer; raises ApiError when a ``Deny`` binding's policy fails."""
        warnings: list[str] = []
        bindings = list(self.store.items(BINDINGS))
        if not bindings:
            return warnings
        namespace = self.store.get(("", "namespaces"), "", req.namespace) if req.namespace else None
        ns_labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
        for binding in sorted(bindings, key=lambda b: str(b["metadata"]["name"])):
            spec = binding.get("spec") or {}
            policy = self.store.get(POLICIES, "", spec.get("policyName", ""))
            if policy is None:
                continue
            policy_spec = policy.get("spec") or {}
            if not resources_match(policy_spec.get("matchConstraints"), req, ns_labels):
                continue
            if not resources_match(spec.get("matchResources"), req, ns_labels):
                continue
            failure = _decide(policy_spec, req, namespace)
            if failure is None:
                continue
            message, reason = failure
            said = (
                f"ValidatingAdmissionPolicy '{policy['metadata']['name']}' with binding "
                f"'{binding['metadata']['name']}' denied request: {message}"
            )
            actions = spec.get("validationActions") or ["Deny"]
            if "Deny" in actions:
                raise _denied(req, said, reason)
            if "Warn" in actions:
                warnings.append(
                    f"Validation failed for ValidatingAdmissionPolicy "
                    f"'{policy['metadata']['name']}' with binding "
                    f"'{binding['metadata']['name']}': {message}"
                )
            if "Audit" in actions:
                log.info("audit: %s", said)
        return warnings


def _decide(spec: Obj, req: AdmissionRequest, namespace: Obj | None) -> tuple[str, str] | None:
    """None when the request passes the policy, else (message, reason)."""
    ignore = spec.get("failurePolicy", "Fail") == "Ignore"
    variables: dict[str, Any] = {}
    activation: dict[str, Any] = {
        "object": json_to_cel(req.obj),
        "oldObject": json_to_cel(req.old),
        "request": json_to_cel(req.to_cel()),
        "params": None,
        "namespaceObject": json_to_cel(namespace),
    }
    try:
        for condition in spec.get("matchConditions") or []:
            activation["variables"] = json_to_cel({})
            if not _truth(_evaluate(condition["expression"], activation), condition["expression"]):
                return None
        for variable in spec.get("variables") or []:
            activation["variables"] = celtypes.MapType(variables)
            try:
                variables[celtypes.StringType(variable["name"])] = _evaluate(
                    variable["expression"], activation
                )
            except _EvaluationError:
                continue  # an expression that uses it fails, naming the missing variable
        activation["variables"] = celtypes.MapType(variables)
    except _EvaluationError as err:
        return None if ignore else (f"failed to evaluate match conditions: {err}", "Invalid")
    for validation in spec.get("validations") or []:
        expression = validation["expression"]
        try:
            if _truth(_evaluate(expression, activation), expression):
                continue
        except _EvaluationError as err:
            if ignore:
                continue
            return f"expression '{expression}' resulted in error: {err}", "Invalid"
        message = validation.get("message") or f"failed expression: {expression}"
        if validation.get("messageExpression"):
            try:
                said = _evaluate(validation["messageExpression"], activation)
                if isinstance(said, str) and said.strip():
                    message = str(said)
            except _EvaluationError:
                pass  # kube-apiserver falls back to message, too
        return message, str(validation.get("reason") or "Invalid")
    return None


def _denied(req: AdmissionRequest, message: str, reason: str) -> ApiError:
    qualified = f"{req.resource}.{req.group}" if req.group else req.resource
    text = f'{qualified} "{req.name}" is forbidden: {message}'
    details = {
        "name": req.name,
        "group": req.group,
        "kind": req.resource,
        "causes": [{"message": message}],
    }
    return ApiError(_CODES.get(reason, 422), reason, text, details)
