"""Fixtures for the API-type tests: the generated CRDs and the example manifests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cadre.api.crd import build_all_crds

REPO = Path(__file__).resolve().parents[2]


def crd_schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.fixture(scope="session")
def crds_by_kind() -> dict[str, dict[str, Any]]:
    return {crd["spec"]["names"]["kind"]: crd for crd in build_all_crds()}


def example_objects() -> list[dict[str, Any]]:
    """Every Cadre object in examples/, for tests that valid input stays valid."""
    out = []
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("apiVersion") == "cadre.dev/v1alpha1":
                out.append(doc)
    return out
