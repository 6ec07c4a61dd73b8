"""Validation ratcheting, as kube-apiserver does it since 1.30 (CRDValidationRatcheting, GA in
1.33): on update, a value equal to the stored one is not held to the schema again, so an
object stored before its CRD got stricter can still have its status written; what changes is
validated in full; transition rules (``oldSelf``) are never ratcheted."""

from __future__ import annotations

import copy
from typing import Any

from cadre.localcluster.apiserver.crdschema import validate

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "size": {"type": "integer", "maximum": 5},
                "name": {"type": "string", "x-kubernetes-validations": [
                    {"rule": "self.startsWith('a')", "message": "must start with a"}]},
                "count": {"type": "integer", "x-kubernetes-validations": [
                    {"rule": "self > oldSelf", "message": "must grow on every write"}]},
            },
        },
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
    },
}  # fmt: skip
STORED = {"spec": {"size": 9, "name": "bob"}, "status": {"phase": "Pending"}}
"""Stored before ``size`` got its maximum and ``name`` its rule."""


def _paths(errors: list[Any]) -> list[str]:
    return sorted(e.path for e in errors)


def test_a_new_object_is_held_to_every_rule() -> None:
    assert _paths(validate(STORED, SCHEMA)) == ["spec.name", "spec.size"]


def test_an_unchanged_spec_does_not_stop_a_status_write() -> None:
    written = copy.deepcopy(STORED)
    written["status"]["phase"] = "Running"
    assert validate(written, SCHEMA, STORED) == []


def test_what_changes_is_validated_in_full() -> None:
    written = copy.deepcopy(STORED)
    written["spec"]["size"] = 8
    assert _paths(validate(written, SCHEMA, STORED)) == ["spec.size"]  # name is unchanged
    written["spec"]["name"] = "carl"
    assert _paths(validate(written, SCHEMA, STORED)) == ["spec.name", "spec.size"]
    written["status"]["phase"] = 3
    assert "status.phase" in _paths(validate(written, SCHEMA, STORED))


def test_transition_rules_are_never_ratcheted() -> None:
    stored = {"spec": {"count": 2}}
    unchanged = validate(copy.deepcopy(stored), SCHEMA, stored)
    assert [(e.path, e.detail) for e in unchanged] == [("spec.count", "must grow on every write")]
    assert validate({"spec": {"count": 3}}, SCHEMA, stored) == []
