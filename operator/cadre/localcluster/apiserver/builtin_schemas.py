"""The schemas of Kubernetes' built-in kinds, as published by Kubernetes 1.32's OpenAPI.

They come from the ``kubernetes-validate`` package (its ``_definitions.json`` is Kubernetes'
own OpenAPI definitions, kept with the patch-merge keys and list types). From them the local
API server gets, without writing any kind by hand: type checks and unknown-field detection
for built-in objects, the merge keys of strategic merge patch, and the OpenAPI documents that
``kubectl explain`` reads.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

KUBERNETES_VERSION = "1.32.0"
_REF_PREFIX = "#/$defs/"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# Keys kept when a definition becomes a structural schema; descriptions stay in the raw one.
_KEPT = (
    "required",
    "enum",
    "format",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-patch-strategy",
    "x-kubernetes-patch-merge-key",
)


@cache
def definitions() -> dict[str, Any]:
    """Kubernetes' OpenAPI definitions by name (``io.k8s.api.core.v1.Pod``, ...)."""
    folder = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    text = (folder / f"v{KUBERNETES_VERSION}-local" / "_definitions.json").read_text()
    defs: dict[str, Any] = json.loads(text)["$defs"]
    return defs


@cache
def _definitions_by_gvk() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            index[(gvk["group"], gvk["version"], gvk["kind"])] = name
    return index


def definition_name(group: str, version: str, kind: str) -> str:
    """The definition of a built-in kind; KeyError names the kind when it has none."""
    return _definitions_by_gvk()[(group, version, kind)]


def referenced(name: str) -> set[str]:
    """``name`` and every definition it refers to, transitively."""
    seen: set[str] = set()
    pending = [name]
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        pending.extend(_refs(definitions()[current]))
    return seen


def _refs(schema: Any) -> list[str]:
    if isinstance(schema, dict):
        found = []
        ref = schema.get("$ref")
        if isinstance(ref, str):
            found.append(ref.removeprefix(_REF_PREFIX))
        for value in schema.values():
            found += _refs(value)
        return found
    if isinstance(schema, list):
        return [ref for item in schema for ref in _refs(item)]
    return []


def _single_type(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return kinds[0] if kinds else None
    return kind if isinstance(kind, str) else None


@cache
def structural(name: str) -> dict[str, Any]:
    """A definition as a structural schema (refs inlined), for ``crdschema``'s functions.

    Recursive definitions (only ``JSONSchemaProps``, inside CRDs) become an opaque object at
    the point they recur: the CRD's own schema is checked separately, as a structural schema.
    """
    return _structural(definitions()[name], (name,))


def _structural(schema: dict[str, Any], stack: tuple[str, ...]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = ref.removeprefix(_REF_PREFIX)
        if target == _INT_OR_STRING:
            return {"x-kubernetes-int-or-string": True}
        if target == _QUANTITY:
            return {"format": "quantity"}  # a string or a number; see crdschema._type_ok
        if target in stack:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return _structural(definitions()[target], (*stack, target))
    for combinator in ("allOf", "oneOf", "anyOf"):
        if combinator in schema and len(schema[combinator]) == 1:
            return _structural(schema[combinator][0], stack)
    out: dict[str, Any] = {key: schema[key] for key in _KEPT if key in schema}
    if "enum" in out:
        out["enum"] = [value for value in out["enum"] if value is not None]
    kind = _single_type(schema)
    if kind is not None:
        out["type"] = kind
    properties = schema.get("properties")
    extra = schema.get("additionalProperties")
    if properties:
        out["properties"] = {k: _structural(v, stack) for k, v in properties.items()}
    elif isinstance(extra, dict):
        out["additionalProperties"] = _structural(extra, stack)
    elif kind == "object":
        # FieldsV1, RawExtension, JSON: free-form objects in Kubernetes' own types.
        out["x-kubernetes-preserve-unknown-fields"] = True
    if isinstance(schema.get("items"), dict):
        out["items"] = _structural(schema["items"], stack)
    if kind is None and "x-kubernetes-int-or-string" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def openapi_schema(schema: Any, ref_prefix: str) -> Any:
    """A definition as OpenAPI (v2 or v3) spells it: one type per schema, refs under
    ``ref_prefix`` (``#/definitions/`` or ``#/components/schemas/``)."""
    if isinstance(schema, list):
        return [openapi_schema(item, ref_prefix) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "$ref" and isinstance(value, str):
            out[key] = ref_prefix + value.removeprefix(_REF_PREFIX)
        elif key == "type":
            single = _single_type(schema)
            if single is not None:
                out[key] = single
        elif key == "enum":
            out[key] = [item for item in value if item is not None]
        elif key in ("properties", "additionalProperties") and isinstance(value, dict):
            out[key] = (
                {k: openapi_schema(v, ref_prefix) for k, v in value.items()}
                if key == "properties"
                else openapi_schema(value, ref_prefix)
            )
        else:
            out[key] = openapi_schema(value, ref_prefix)
    return out
