"""Manifests as ``kubectl apply -f DIR`` reads them, and how ``cadre demo`` adapts them."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from cadre.api.names import MODEL_KEY_LABEL
from cadre.api.types import Obj

# The order a cluster wants them in: what is referenced before what refers to it.
KIND_ORDER = {"Secret": 0, "Agent": 1, "Team": 2, "Task": 3}


class ManifestError(Exception):
    """A file that is not a Kubernetes manifest; the message names the file and document."""


def load_manifests(folder: Path) -> list[Obj]:
    """Every object in the folder's ``*.yaml`` files (not its subfolders, as ``kubectl apply
    -f`` does), ordered for creation."""
    objects: list[tuple[int, int, Obj]] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as err:
            raise ManifestError(f"{path}: not YAML: {err}") from err
        for index, document in enumerate(documents, start=1):
            if document is None:
                continue
            if not isinstance(document, dict) or not document.get("kind"):
                raise ManifestError(f"{path}: document {index} has no kind")
            if not isinstance(document.get("metadata"), dict) or "name" not in document["metadata"]:
                raise ManifestError(f"{path}: document {index} has no metadata.name")
            objects.append((KIND_ORDER.get(document["kind"], 4), len(objects), document))
    if not objects:
        raise ManifestError(f"{folder}: no manifests (*.yaml) found")
    return [obj for _, _, obj in sorted(objects, key=lambda item: item[:2])]


def for_model(objects: list[Obj], base_url: str | None) -> list[Obj]:
    """The objects with every Agent pointed at ``base_url`` (the scripted model); unchanged
    when ``base_url`` is None (the real model)."""
    adapted = copy.deepcopy(objects)
    if base_url is not None:
        for obj in adapted:
            if obj["kind"] == "Agent":
                obj.setdefault("spec", {})["baseURL"] = base_url
    return adapted


def api_key_secret(name: str, key: str, value: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        # The owner's consent that Agents may use it as a model key (model_access.py).
        "metadata": {"name": name, "labels": {MODEL_KEY_LABEL: "true"}},
        "type": "Opaque",
        "stringData": {key: value},
    }


def secret_refs(objects: list[Obj]) -> set[tuple[str, str]]:
    """The (Secret, key) pairs the Agents read their API key from."""
    refs = set()
    for obj in objects:
        if obj["kind"] == "Agent":
            ref = obj.get("spec", {}).get("apiKeySecretRef") or {}
            refs.add((ref.get("name", "anthropic"), ref.get("key", "api-key")))
    return refs


def describe(obj: Obj) -> str:
    return f"{obj['kind']} {obj['metadata']['name']}"
