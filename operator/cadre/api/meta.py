"""What every Cadre kind shares: the group, the base model, bounded field types, conditions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from cadre.api.cel import CelRule, evaluate

GROUP = "cadre.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def _add_cel_rules(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    rules: tuple[CelRule, ...] = cls.__dict__.get("cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.to_crd() for r in rules]


class ApiModel(BaseModel):
    """Base of every spec and status model: camelCase on the wire, unknown fields refused.

    A subclass lists its cross-field rules in ``cel_rules``; they go into the CRD and are
    evaluated here too, after the fields themselves validate, so a spec that the API server
    would refuse never gets past the operator or the CLI either.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra=_add_cel_rules,
        validate_default=False,
    )
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_list_keys(self) -> ApiModel:
        # The CRD declares lists as sets or maps; the API server refuses duplicates in them.
        for name, info in type(self).model_fields.items():
            extra = info.json_schema_extra
            if not isinstance(extra, dict) or "x-kubernetes-list-type" not in extra:
                continue
            keys = extra.get("x-kubernetes-list-map-keys")
            seen: set[str] = set()
            for index, item in enumerate(getattr(self, name)):
                data = item.to_json() if isinstance(item, ApiModel) else item
                key_names = [str(k) for k in keys] if isinstance(keys, list) else None
                marker = repr([data[k] for k in key_names]) if key_names else repr(data)
                if marker in seen:
                    raise PydanticCustomError(
                        "duplicate",
                        "Duplicate value: {value}",
                        {"value": marker, "subpath": f".{info.alias or name}[{index}]"},
                    )
                seen.add(marker)
        return self

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        rules = type(self).__dict__.get("cel_rules", ())
        if not rules:
            return self
        value = self.to_json()
        for rule in rules:
            if rule.is_transition:
                continue  # needs the stored object; the API server checks it on update
            outcome = evaluate(rule.rule, value)
            if outcome is not True:
                detail = rule.message if outcome is False else f"{rule.message} ({outcome})"
                raise PydanticCustomError(
                    "cel_rule", "{message}", {"message": detail, "subpath": rule.field_path or ""}
                )
        return self

    def to_json(self) -> dict[str, Any]:
        """The model as the API server stores it: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# Bounded string types. Kubernetes' CEL cost estimator and etcd both want every string bounded.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

ObjectName = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
]
"""The name of a Kubernetes object in the same namespace (an RFC 1123 subdomain)."""

DnsLabel = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)]
"""An RFC 1123 label: the names that end up in label values and host names."""

SecretKey = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")
]
"""A key inside a Secret's ``data``."""

Duration = Annotated[
    str, StringConstraints(min_length=2, max_length=32, pattern=r"^([0-9]{1,6}(ms|s|m|h))+$")
]
"""A duration in Go's notation, as Kubernetes writes them: ``90s``, ``30m``, ``1h30m``."""

Quantity = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=32,
        pattern=r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$",
    ),
]
"""A Kubernetes resource quantity (``500m``, ``2Gi``), written as a string."""

UsdAmount = Annotated[
    str, StringConstraints(min_length=1, max_length=16, pattern=r"^[0-9]{1,9}(\.[0-9]{1,6})?$")
]
"""An amount in US dollars as a decimal string (``"2.50"``): exact, unlike a float."""

ShortText = Annotated[str, StringConstraints(max_length=256)]
"""One line of text for people: a role, a title, a reason."""


class ConditionStatus(StrEnum):
    """The three values of a Kubernetes condition's status."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(ApiModel):
    """One aspect of an object's state, the way ``kubectl wait --for=condition=...`` reads it."""

    type: Annotated[
        str,
        StringConstraints(
            min_length=1,
            max_length=316,
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        ),
    ]
    """The aspect, in CamelCase: ``Ready``, ``Accepted``, ``Succeeded``."""
    status: ConditionStatus
    """``True``, ``False`` or ``Unknown`` (still being decided)."""
    reason: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
        ),
    ]
    """A CamelCase word for programs and dashboards, such as ``SecretNotFound``."""
    message: Annotated[str, StringConstraints(max_length=32768)] = ""
    """A sentence for people: what happened and, when something is wrong, what to do."""
    last_transition_time: datetime
    """When the status last changed (not when the condition was last written)."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` this condition was computed from."""


def conditions_field() -> Any:
    """The ``conditions`` list every status carries: a map keyed by type, so merges keep it."""
    return Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


class SecretKeyReference(ApiModel):
    """A key in a Secret in the same namespace."""

    name: ObjectName
    """The Secret's name."""
    key: SecretKey = "api-key"
    """The key inside the Secret's data."""


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
