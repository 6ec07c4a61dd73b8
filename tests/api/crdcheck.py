"""Validate an object the way the API server does with a CRD: unknown fields, prune, default,
schema and CEL. Shared by the API-type tests."""

from __future__ import annotations

from typing import Any

from cadre.localcluster.apiserver.crdschema import apply_defaults, prune, unknown_fields, validate

from tests.api.conftest import crd_schema


def crd_errors(
    crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None
) -> list[str]:
    schema = crd_schema(crd)
    errors = [f'unknown field "{path}"' for path in unknown_fields(obj, schema)]
    stored = apply_defaults(prune(obj, schema), schema)
    old_stored = apply_defaults(prune(old, schema), schema) if old is not None else None
    return errors + [str(e) for e in validate(stored, schema, old_stored)]


def crd_defaulted(crd: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    schema = crd_schema(crd)
    out: dict[str, Any] = apply_defaults(prune(obj, schema), schema)
    return out
