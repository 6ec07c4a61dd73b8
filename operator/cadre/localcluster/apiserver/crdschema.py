"""What the API server does with a CRD's ``openAPIV3Schema``: structural checks, pruning,
defaulting and validation (including CEL ``x-kubernetes-validations``), with field errors worded
the way kube-apiserver words them, so ``kubectl`` users read the same messages here and there.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from cadre.api.cel import CelCompileError, compile_rule, evaluate

# Fields the API server owns at the root of every object; never pruned, validated elsewhere.
_ROOT_OWNED = ("apiVersion", "kind", "metadata")
_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


@dataclass(frozen=True)
class FieldError:
    """One problem with one field, as in ``field.ErrorList`` of kube-apiserver."""

    path: str
    kind: str
    """``Required value``, ``Invalid value``, ``Unsupported value``, ``Too long``, ..."""
    detail: str = ""
    value: Any = None
    show_value: bool = False

    def __str__(self) -> str:
        head = f"{self.path or '<nil>'}: {self.kind}"
        if self.show_value:
            head += f": {_render_value(self.value)}"
        return f"{head}: {self.detail}" if self.detail else head


def _render_value(value: Any) -> str:
    if isinstance(value, dict | list):
        return '"object"' if isinstance(value, dict) else '"array"'
    return json.dumps(value)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    if schema.get("format") == "quantity" and "type" not in schema:
        # resource.Quantity of the built-in kinds: "500m", 2 and 0.5 all decode.
        return isinstance(value, int | float | str) and not isinstance(value, bool)
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, int | str) and not isinstance(value, bool)
    expected = schema.get("type")
    if expected is None:
        return True
    if isinstance(value, bool) and expected in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[expected])


# ---------------------------------------------------------------------------------------------
# Structural schemas


def check_structural(schema: dict[str, Any], path: str = "openAPIV3Schema") -> list[str]:
    """Why a schema is not structural (empty when it is), following apiextensions v1's rules."""
    problems: list[str] = []
    for key in ("$ref", "anyOf", "oneOf", "allOf", "not", "definitions", "$defs", "title"):
        # anyOf/oneOf/allOf/not are allowed only as value validations without types; Cadre
        # never needs them, so the check is stricter than Kubernetes here.
        if key in schema:
            problems.append(f"{path}.{key}: Forbidden: not allowed in a structural schema")
    if schema.get("uniqueItems") is True:
        problems.append(f"{path}.uniqueItems: Forbidden: uniqueItems cannot be set to true")
    if "additionalProperties" in schema and "properties" in schema:
        problems.append(
            f"{path}.additionalProperties: Forbidden: additionalProperties and properties "
            "are mutual exclusive"
        )
    if isinstance(schema.get("additionalProperties"), bool):
        problems.append(f"{path}.additionalProperties: Forbidden: must be a schema, not a bool")
    untyped_ok = schema.get("x-kubernetes-int-or-string") or schema.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if "type" not in schema and not untyped_ok:
        problems.append(f"{path}.type: Required value: must not be empty for specified object")
    if schema.get("type") == "array" and "items" not in schema:
        problems.append(f"{path}.items: Required value: must be specified")
    for name, sub in schema.get("properties", {}).items():
        problems += check_structural(sub, f"{path}.properties[{name}]")
    if isinstance(schema.get("items"), dict):
        problems += check_structural(schema["items"], f"{path}.items")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += check_structural(schema["additionalProperties"], f"{path}.additionalProperties")
    for index, rule in enumerate(schema.get("x-kubernetes-validations", [])):
        try:
            compile_rule(rule["rule"])
        except CelCompileError as err:
            problems.append(f"{path}.x-kubernetes-validations[{index}].rule: Invalid value: {err}")
    return problems


# ---------------------------------------------------------------------------------------------
# Pruning and defaulting


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> Iterator[str]:
    """Paths of fields the schema does not declare (what ``fieldValidation=Strict`` refuses)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(obj, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if not path and key in _ROOT_OWNED:
                continue
            if props is not None and key in props:
                yield from unknown_fields(value, props[key], _join(path, key))
            elif isinstance(extra, dict):
                yield from unknown_fields(value, extra, f"{path}[{key}]")
            else:
                yield _join(path, key)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(obj):
            yield from unknown_fields(item, schema["items"], f"{path}[{index}]")


def prune(obj: Any, schema: dict[str, Any], root: bool = True) -> Any:
    """Drop undeclared fields and nulls of non-nullable fields, as the API server does."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return obj
    if isinstance(obj, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out: dict[str, Any] = {}
        for key, value in obj.items():
            if root and key in _ROOT_OWNED:
                out[key] = value
                continue
            sub = (
                props.get(key) if props is not None else extra if isinstance(extra, dict) else None
            )
            if sub is None:
                continue
            if value is None and not sub.get("nullable"):
                continue
            out[key] = prune(value, sub, root=False)
        return out
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"], root=False) for item in obj]
    return obj


def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """Fill in ``default`` values of absent fields, outermost first, as the API server does."""
    if isinstance(obj, dict) and schema.get("type") == "object":
        out = dict(obj)
        for key, sub in schema.get("properties", {}).items():
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(out[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in out:
                out[key] = apply_defaults(out[key], extra)
        return out
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(item, schema["items"]) for item in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# Validation


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _is_date_time(value: str) -> bool:
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value or " " in value


def _list_key(item: Any, keys: list[str]) -> tuple[Any, ...] | None:
    if not isinstance(item, dict):
        return None
    return tuple(item.get(k) for k in keys)


def validate(obj: Any, schema: dict[str, Any], old: Any = None, path: str = "") -> list[FieldError]:
    """Every way ``obj`` breaks ``schema``; ``old`` is the stored object on update (for
    transition rules). Call it on a pruned and defaulted object, as the API server does."""
    errors: list[FieldError] = []
    _validate(obj, schema, old, path, errors)
    return errors


_TRANSITIONS: dict[int, tuple[dict[str, Any], bool]] = {}
"""Whether a schema node or anything under it has a transition rule, by the node's id (the
node is kept with the answer, so its id is never reused for another)."""


def _has_transition_rules(schema: dict[str, Any]) -> bool:
    found = _TRANSITIONS.get(id(schema))
    if found is None or found[0] is not schema:
        found = (schema, "oldSelf" in json.dumps(schema))
        _TRANSITIONS[id(schema)] = found
    return found[1]


def _validate(
    value: Any, schema: dict[str, Any], old: Any, path: str, errors: list[FieldError]
) -> None:
    # Ratcheting (CRDValidationRatcheting: on by default since Kubernetes 1.30, GA in 1.33): on
    # update, a value equal to the stored one is not held to the schema again, so a status
    # write does not re-check the spec. Transition rules (oldSelf) are never ratcheted.
    if old is not None and value == old:
        if _has_transition_rules(schema):
            _transition_rules(value, schema, path, errors)
        return
    if value is None:
        if not schema.get("nullable"):
            errors.append(FieldError(path, "Invalid value", "must not be null", "null", True))
        return
    if not _type_ok(value, schema):
        expected = schema.get("type", "integer or string")
        errors.append(
            FieldError(
                path,
                "Invalid value",
                f"{path} in body must be of type {expected}: {_render_value(type(value).__name__)}",
                type(value).__name__,
                True,
            )
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(json.dumps(v) for v in schema["enum"])
        errors.append(
            FieldError(path, "Unsupported value", f"supported values: {supported}", value, True)
        )
    if isinstance(value, str):
        _validate_string(value, schema, path, errors)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(
                FieldError(
                    path,
                    "Invalid value",
                    f"{path} in body should be greater than or equal to {schema['minimum']}",
                    value,
                    True,
                )
            )
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(
                FieldError(
                    path,
                    "Invalid value",
                    f"{path} in body should be less than or equal to {schema['maximum']}",
                    value,
                    True,
                )
            )
    elif isinstance(value, list):
        _validate_list(value, schema, old, path, errors)
    elif isinstance(value, dict):
        _validate_object(value, schema, old, path, errors)
    _validate_rules(value, schema, old, path, errors)


def _validate_string(
    value: str, schema: dict[str, Any], path: str, errors: list[FieldError]
) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(
            FieldError(path, "Too long", f"may not be more than {schema['maxLength']} bytes")
        )
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(
            FieldError(
                path,
                "Invalid value",
                f"{path} in body should be at least {schema['minLength']} chars long",
                value,
                True,
            )
        )
    if "pattern" in schema and not _regex(schema["pattern"]).search(value):
        errors.append(
            FieldError(
                path,
                "Invalid value",
                f"{path} in body should match '{schema['pattern']}'",
                value,
                True,
            )
        )
    if schema.get("format") == "date-time" and not _is_date_time(value):
        errors.append(
            FieldError(
                path, "Invalid value", f"{path} in body must be of type date-time", value, True
            )
        )


def _validate_list(
    value: list[Any], schema: dict[str, Any], old: Any, path: str, errors: list[FieldError]
) -> None:
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(
            FieldError(
                path,
                "Too many",
                f"must have at most {schema['maxItems']} items",
                len(value),
                True,
            )
        )
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(
            FieldError(
                path,
                "Invalid value",
                f"{path} in body should have at least {schema['minItems']} items",
                len(value),
                True,
            )
        )
    list_type = schema.get("x-kubernetes-list-type", "atomic")
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen: set[str] = set()
    old_by_key: dict[tuple[Any, ...] | None, Any] = {}
    if list_type == "map" and isinstance(old, list):
        old_by_key = {_list_key(item, keys): item for item in old}
    items = schema.get("items", {})
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        if list_type == "set":
            marker = json.dumps(item, sort_keys=True)
            if marker in seen:
                errors.append(FieldError(item_path, "Duplicate value", value=item, show_value=True))
            seen.add(marker)
        elif list_type == "map":
            key = _list_key(item, keys)
            marker = json.dumps(key)
            if marker in seen:
                shown = dict(zip(keys, key or (), strict=False))
                errors.append(
                    FieldError(item_path, "Duplicate value", value=shown, show_value=True)
                )
            seen.add(marker)
        # Transition rules see an old item only where Kubernetes can correlate it: by map key.
        old_item = old_by_key.get(_list_key(item, keys)) if list_type == "map" else None
        _validate(item, items, old_item, item_path, errors)


def _validate_object(
    value: dict[str, Any], schema: dict[str, Any], old: Any, path: str, errors: list[FieldError]
) -> None:
    for name in schema.get("required", []):
        if name not in value:
            errors.append(FieldError(_join(path, name), "Required value"))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errors.append(
            FieldError(
                path,
                "Too many",
                f"must have at most {schema['maxProperties']} items",
                len(value),
                True,
            )
        )
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    old_map = old if isinstance(old, dict) else {}
    for key, sub_value in value.items():
        if not path and key in _ROOT_OWNED and key not in props:
            continue
        if key in props:
            _validate(sub_value, props[key], old_map.get(key), _join(path, key), errors)
        elif isinstance(extra, dict):
            _validate(sub_value, extra, old_map.get(key), f"{path}[{key}]", errors)


def _transition_rules(
    value: Any, schema: dict[str, Any], path: str, errors: list[FieldError]
) -> None:
    """The transition rules over an unchanged value (its old value is itself)."""
    if not _has_transition_rules(schema) or value is None:
        return
    if isinstance(value, dict):
        props, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, sub_value in value.items():
            if key in props:
                _transition_rules(sub_value, props[key], _join(path, key), errors)
            elif isinstance(extra, dict):
                _transition_rules(sub_value, extra, f"{path}[{key}]", errors)
    elif isinstance(value, list) and schema.get("x-kubernetes-list-type") == "map":
        for index, item in enumerate(value):
            _transition_rules(item, schema.get("items", {}), f"{path}[{index}]", errors)
    _validate_rules(value, schema, value, path, errors, transitions_only=True)


def _validate_rules(
    value: Any, schema: dict[str, Any], old: Any, path: str, errors: list[FieldError],
    transitions_only: bool = False,
) -> None:  # fmt: skip
    for rule in schema.get("x-kubernetes-validations", []):
        text = rule["rule"]
        if "oldSelf" in text and old is None:
            continue  # transition rules apply to updates where the old value exists
        if transitions_only and "oldSelf" not in text:
            continue
        outcome = evaluate(text, value, old if "oldSelf" in text else None)
        if outcome is True:
            continue
        message = rule.get("message") or f"failed rule: {text}"
        if isinstance(outcome, str):
            message = f"{message}: {outcome}"
        where = (path + rule.get("fieldPath", "")).lstrip(".") or path
        errors.append(FieldError(where, "Invalid value", message, value, True))
