"""Turn the API models into CustomResourceDefinitions: pure functions, no I/O.

pydantic's JSON Schema is not a valid CRD schema (``$ref``, ``anyOf`` with ``null``, ``title``,
``additionalProperties: false``, numeric ``exclusiveMinimum``), so it is converted into a
structural schema here rather than written by hand.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import PydanticUndefined, core_schema

from cadre.api.agent import Agent
from cadre.api.meta import GROUP, VERSION, ApiModel
from cadre.api.policy import Policy
from cadre.api.task import Task
from cadre.api.team import Team

CATEGORY = "cadre"

# Keys that carry meaning in a structural schema, in the order they are written (a human reads
# type and description first); anything else pydantic emits is dropped.
_KEY_ORDER = (
    "type",
    "description",
    "properties",
    "required",
    "items",
    "enum",
    "default",
    "format",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "additionalProperties",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-preserve-unknown-fields",
)


class _CrdSchemaGenerator(GenerateJsonSchema):
    """Also emits defaults that come from ``default_factory``, so the API server applies them."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is None or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            # An empty object is enough: the API server then applies the nested defaults.
            return {}
        return NoDefault if value is PydanticUndefined else value


def _describe(text: str) -> str:
    # Docstrings use reStructuredText literals; kubectl explain shows text as it is.
    return text.replace("``", '"').strip()


def to_structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Convert one pydantic JSON Schema node into a Kubernetes structural schema node."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "anyOf" in node:
        # Optional[X] is anyOf [X, null]: Kubernetes prunes nulls of non-nullable fields before
        # validation, so "not required" says all there is to say and CEL's has() stays exact.
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"unions are not structural: {branches}")
        inner = to_structural(branches[0], defs)
        node = {**inner, **{k: v for k, v in node.items() if k != "type"}}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "exclusiveMinimum" in node and node.get("type") == "integer":
        node["minimum"] = node.pop("exclusiveMinimum") + 1
    if "exclusiveMaximum" in node and node.get("type") == "integer":
        node["maximum"] = node.pop("exclusiveMaximum") - 1
    if node.get("default", 0) is None:
        del node["default"]

    out: dict[str, Any] = {}
    for key in _KEY_ORDER:
        if key not in node:
            continue
        value = node[key]
        if key == "description":
            out[key] = _describe(value)
        elif key == "properties":
            out[key] = {name: to_structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = to_structural(value, defs)
        elif key == "additionalProperties":
            if isinstance(value, dict) and "properties" not in node:
                out[key] = to_structural(value, defs)
            # ``false`` (extra="forbid") is what pruning already does; it is not structural.
        else:
            out[key] = copy.deepcopy(value)
    if "type" not in out and "enum" in out:
        out = {"type": "string", **out}
    return out


def spec_schema(model: type[ApiModel]) -> dict[str, Any]:
    """The structural schema of a spec or status model."""
    raw = model.model_json_schema(by_alias=True, schema_generator=_CrdSchemaGenerator)
    return to_structural(raw, raw.get("$defs", {}))


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_crd(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


@dataclass(frozen=True)
class KindInfo:
    """Everything a CRD needs besides the schema."""

    model: type[ApiModel]
    plural: str
    short_names: tuple[str, ...]
    columns: tuple[PrinterColumn, ...]

    @property
    def kind(self) -> str:
        return self.model.__name__

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _condition(type_: str) -> str:
    return f'.status.conditions[?(@.type=="{type_}")].status'


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")

KINDS: tuple[KindInfo, ...] = (
    KindInfo(
        model=Agent,
        plural="agents",
        short_names=("agt",),
        columns=(
            PrinterColumn("Model", ".spec.model"),
            PrinterColumn("Ready", _condition("Ready")),
            PrinterColumn("Active", ".status.activeTasks", "integer", "Tasks being worked"),
            PrinterColumn("Queued", ".status.queuedTasks", "integer", "Tasks waiting", 1),
            PrinterColumn("Role", ".spec.role", priority=1),
            AGE,
        ),
    ),
    KindInfo(
        model=Team,
        plural="teams",
        short_names=("tm",),
        columns=(
            PrinterColumn("Lead", ".spec.lead"),
            PrinterColumn("Ready", _condition("Ready")),
            PrinterColumn("Members", ".status.members", "integer"),
            PrinterColumn("Ready-Members", ".status.readyMembers", "integer", priority=1),
            AGE,
        ),
    ),
    KindInfo(
        model=Task,
        plural="tasks",
        short_names=("tsk",),
        columns=(
            PrinterColumn("Agent", ".status.agent", description="The Agent working the Task"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn(
                "Parent",
                ".status.parent",
                description="The delegating Task, or the Task whose delivery this one reviews",
            ),
            PrinterColumn("Turns", ".status.usage.turns", "integer"),
            PrinterColumn("Cost", ".status.usage.costUSD", description="US dollars"),
            PrinterColumn(
                "Waiting-For",
                ".status.waitingFor",
                description="A tool call waiting for a human's approval",
            ),
            PrinterColumn("Title", ".spec.title", priority=1),
            AGE,
        ),
    ),
    KindInfo(
        model=Policy,
        plural="policies",
        short_names=("pol",),
        columns=(
            PrinterColumn("Default", ".spec.defaultDecision"),
            PrinterColumn("Selecting", _condition("Selecting")),
            AGE,
        ),
    ),
)


def root_schema(info: KindInfo) -> dict[str, Any]:
    """The ``openAPIV3Schema`` of one kind."""
    fields = info.model.model_fields
    spec_model = fields["spec"].annotation
    status_model = fields["status"].annotation
    assert isinstance(spec_model, type)
    assert issubclass(spec_model, ApiModel)
    status_types = [t for t in getattr(status_model, "__args__", ()) if t is not type(None)]
    schema: dict[str, Any] = {
        "type": "object",
        "description": _describe(info.model.__doc__ or info.kind),
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "The versioned schema of this object: cadre.dev/v1alpha1.",
            },
            "kind": {"type": "string", "description": f"Always {info.kind}."},
            "metadata": {"type": "object"},
            "spec": spec_schema(spec_model),
            "status": spec_schema(status_types[0]),
        },
        "required": ["spec"],
    }
    rules = info.model.__dict__.get("cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.to_crd() for r in rules]
    return schema


def build_crd(info: KindInfo) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.crd_name,
            "labels": {"app.kubernetes.io/part-of": "cadre"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.kind.lower(),
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.to_crd() for c in info.columns],
                    "schema": {"openAPIV3Schema": root_schema(info)},
                }
            ],
        },
    }


def build_all_crds() -> list[dict[str, Any]]:
    """Every CRD Cadre installs, in a stable order."""
    return [build_crd(info) for info in KINDS]


def crd_file_name(crd: dict[str, Any]) -> str:
    """The file a CRD is written to in ``crds/``: ``cadre.dev_tasks.yaml``."""
    group: str = crd["spec"]["group"]
    plural: str = crd["spec"]["names"]["plural"]
    return f"{group}_{plural}.yaml"


def render_crd_yaml(crd: dict[str, Any]) -> str:
    """A CRD as the YAML written to ``crds/``: stable key order, so diffs stay readable."""
    header = "# Generated by `make crds` from operator/cadre/api; do not edit by hand.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100, allow_unicode=True)
