"""Pure builders and predicates the workload controllers share: an owner's controller
reference, whether a pod is controlled by an owner or ready, a pod made from an owner's
template (a ReplicaSet's or a Job's: generated name, template labels and annotations), and the
short template hash revision names are made of."""

from __future__ import annotations

import copy
import hashlib
import json

from cadre.api.types import Obj


def template_hash(template: Obj) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def owner_ref(obj: Obj) -> Obj:
    """The controller reference a controller puts on what it creates."""
    meta = obj["metadata"]
    return {
        "apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": meta["name"],
        "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True,
    }  # fmt: skip


def controlled_by(pod: Obj, owner: Obj) -> bool:
    refs = pod["metadata"].get("ownerReferences") or []
    return any(r.get("uid") == owner["metadata"]["uid"] and r.get("controller") for r in refs)


def pod_ready(pod: Obj) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def pod_from_template(owner: Obj) -> Obj:
    """A pod of ``owner``'s ``spec.template`` named ``<owner>-<random>`` by the API server."""
    template = copy.deepcopy(owner["spec"]["template"])
    meta = template.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{owner['metadata']['name']}-",
            "labels": meta.get("labels") or {},
            "annotations": meta.get("annotations") or {},
            "ownerReferences": [owner_ref(owner)],
        },
        "spec": template.get("spec") or {},
    }
