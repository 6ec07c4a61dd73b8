"""Label and field selectors with the grammar and the error messages of Kubernetes
(k8s.io/apimachinery/pkg/labels and pkg/fields)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cadre.localcluster.apiserver.status import bad_request

_FIELDS_OF_ALL = ("metadata.name", "metadata.namespace")
# The field labels each built-in kind's registry strategy accepts, for the kinds served here.
_FIELDS_BY_KIND: dict[str, tuple[str, ...]] = {
    "Pod": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "Event": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "Secret": ("type",),
    "Namespace": ("status.phase",),
    "Node": ("spec.unschedulable",),
    "Job": ("status.successful",),
}
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[^\s!=<>,()]+)\s*"
    r"(?:(?P<op>==|=|!=|>|<)\s*(?P<value>[^\s,()]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str
    """``=``, ``!=``, ``in``, ``notin``, ``exists``, ``!``, ``>``, ``<``"""
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        try:  # > and < compare integers; a label that is not one never matches
            number, bound = int(value or ""), int(self.values[0])
        except ValueError:
            return False
        return present and (number > bound if self.op == ">" else number < bound)


def _split(text: str) -> list[str]:
    """Split on commas outside parentheses: ``a in (x,y),b`` -> two requirements."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def parse_label_selector(text: str) -> list[Requirement]:
    """Parse ``labelSelector``; a 400 names the part that does not parse."""
    if not text.strip():
        return []
    found = []
    for part in _split(text):
        match = _REQUIREMENT.match(part)
        if match is None:
            raise bad_request(f'unable to parse requirement: found "{part.strip()}"')
        key = match["key"]
        if not _LABEL_KEY.match(key):
            raise bad_request(
                f'unable to parse requirement: invalid label key "{key}": name part must consist'
                " of alphanumeric characters, '-', '_' or '.', and must start and end with an"
                " alphanumeric character"
            )
        if match["neg"]:
            if match["op"] or match["setop"]:
                raise bad_request(f'unable to parse requirement: found "{part.strip()}"')
            found.append(Requirement(key, "!"))
            continue
        if match["setop"]:
            values = tuple(v.strip() for v in match["values"].split(",") if v.strip())
            found.append(Requirement(key, match["setop"], values))
        elif match["op"]:
            op = "=" if match["op"] == "==" else match["op"]
            found.append(Requirement(key, op, (match["value"],)))
        else:
            found.append(Requirement(key, "exists"))
        for value in found[-1].values:
            if not _LABEL_VALUE.match(value) or len(value) > 63:
                raise bad_request(
                    f'unable to parse requirement: invalid label value: "{value}": a valid'
                    " label must be an empty string or consist of alphanumeric characters,"
                    " '-', '_' or '.', and must start and end with an alphanumeric character"
                )
    return found


def labels_match(requirements: list[Requirement], obj: dict[str, Any]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(req.matches(labels) for req in requirements)


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    negated: bool
    value: str


def parse_field_selector(text: str, kind: str, custom: bool) -> list[FieldRequirement]:
    """Parse ``fieldSelector`` for one kind; unknown fields get the API server's 400."""
    if not text.strip():
        return []
    allowed = _FIELDS_OF_ALL + (() if custom else _FIELDS_BY_KIND.get(kind, ()))
    found = []
    for part in text.split(","):
        match = re.match(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if match is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        name, op, value = match.groups()
        if name not in allowed:
            if custom:
                known = ", ".join(f'"{f}"' for f in allowed)
                raise bad_request(f'"{name}" is not a known field selector: only {known}')
            raise bad_request(f"field label not supported: {name}")
        found.append(FieldRequirement(name, op == "!=", value))
    return found


def _field_value(obj: dict[str, Any], path: str) -> str:
    current: Any = obj
    for part in path.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    if isinstance(current, bool):
        return "true" if current else "false"
    return "" if current is None else str(current)


def fields_match(requirements: list[FieldRequirement], obj: dict[str, Any]) -> bool:
    return all((_field_value(obj, req.field) == req.value) != req.negated for req in requirements)


Matcher = Callable[[dict[str, Any]], bool]


def matcher(label_selector: str, field_selector: str, kind: str, custom: bool) -> Matcher:
    """One predicate for both selectors, parsed once (raises ApiError 400 on bad syntax)."""
    labels = parse_label_selector(label_selector)
    fields = parse_field_selector(field_selector, kind, custom)

    def matches(obj: dict[str, Any]) -> bool:
        return labels_match(labels, obj) and fields_match(fields, obj)

    return matches


def label_selector_matches(selector: dict[str, Any] | None, labels: dict[str, Any]) -> bool:
    """A LabelSelector object (``matchLabels``, ``matchExpressions``); empty selects all."""
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key", ""), expression.get("operator", "")
        values = expression.get("values") or []
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True
