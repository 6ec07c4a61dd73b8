"""Each CRD is a valid apiextensions.k8s.io/v1 object with a structural, bounded schema."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonpath_ng.ext
import kubernetes_validate
import pytest
from cadre.localcluster.apiserver.crdschema import check_structural

from tests.api.conftest import crd_schema

KINDS = ["Agent", "Team", "Task", "Policy"]


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", KINDS)
def test_crd_validates_against_the_kubernetes_132_schema(
    crds_by_kind: dict[str, Any], kind: str
) -> None:
    kubernetes_validate.validate(crds_by_kind[kind], "1.32", strict=True)


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_structural(crds_by_kind: dict[str, Any], kind: str) -> None:
    assert check_structural(crd_schema(crds_by_kind[kind])) == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_string_list_and_map_is_bounded(crds_by_kind: dict[str, Any], kind: str) -> None:
    unbounded = []
    for path, node in walk(crd_schema(crds_by_kind[kind])):
        if path in ("", ".metadata", ".apiVersion", ".kind"):
            continue  # owned and bounded by the API server itself
        kind_of = node.get("type")
        if kind_of == "string" and not (
            "maxLength" in node or "enum" in node or node.get("format") == "date-time"
        ):
            unbounded.append(f"{path}: string without maxLength")
        if kind_of == "array" and "maxItems" not in node:
            unbounded.append(f"{path}: array without maxItems")
        if kind_of == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(f"{path}: map without maxProperties")
    assert unbounded == []


@pytest.mark.parametrize("kind", KINDS)
def test_every_field_has_a_description_for_kubectl_explain(
    crds_by_kind: dict[str, Any], kind: str
) -> None:
    missing = [
        path
        for path, node in walk(crd_schema(crds_by_kind[kind]))
        if path not in ("", ".metadata") and not path.endswith("[]") and not node.get("description")
    ]
    assert missing == []


@pytest.mark.parametrize("kind", KINDS)
def test_names_short_names_category_and_status_subresource(
    crds_by_kind: dict[str, Any], kind: str
) -> None:
    spec = crds_by_kind[kind]["spec"]
    assert spec["group"] == "cadre.dev"
    assert spec["scope"] == "Namespaced"
    assert "cadre" in spec["names"]["categories"]
    assert spec["names"]["shortNames"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    assert crd_schema(crds_by_kind[kind])["required"] == ["spec"]


@pytest.mark.parametrize("kind", KINDS)
def test_printer_columns_point_at_declared_fields(crds_by_kind: dict[str, Any], kind: str) -> None:
    version = crds_by_kind[kind]["spec"]["versions"][0]
    declared = {path for path, _ in walk(crd_schema(crds_by_kind[kind]))}
    for column in version["additionalPrinterColumns"]:
        jsonpath_ng.ext.parse(column["jsonPath"].lstrip("."))  # parses as JSONPath
        field = column["jsonPath"].split("[", 1)[0]
        assert field == ".metadata.creationTimestamp" or field in declared, column


def test_status_carries_conditions_as_a_map_keyed_by_type(crds_by_kind: dict[str, Any]) -> None:
    for kind in KINDS:
        conditions = crd_schema(crds_by_kind[kind])["properties"]["status"]["properties"][
            "conditions"
        ]
        assert conditions["x-kubernetes-list-type"] == "map"
        assert conditions["x-kubernetes-list-map-keys"] == ["type"]
        item = conditions["items"]
        assert set(item["required"]) == {"type", "status", "reason", "lastTransitionTime"}
        assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
        assert "observedGeneration" in item["properties"]


def test_task_phase_is_a_closed_enum(crds_by_kind: dict[str, Any]) -> None:
    phase = crd_schema(crds_by_kind["Task"])["properties"]["status"]["properties"]["phase"]
    assert phase["enum"] == [
        "Pending",
        "Running",
        "Waiting",
        "InReview",
        "Succeeded",
        "Failed",
        "Cancelled",
    ]


def test_optional_fields_are_not_required_and_carry_no_null_type(
    crds_by_kind: dict[str, Any],
) -> None:
    for kind in KINDS:
        for path, node in walk(crd_schema(crds_by_kind[kind])):
            assert node.get("type") != "null", path
            assert "anyOf" not in node, path
