"""Server-side printing: the ``Table`` kubectl asks for (``Accept: ...;as=Table``), with a
CRD's ``additionalPrinterColumns`` or the columns kube-apiserver prints for built-in kinds."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from jsonpath_ng.ext import parser as jsonpath_parser

from cadre.api.types import Obj
from cadre.localcluster.apiserver.metadata import parse_time
from cadre.localcluster.apiserver.registry import ResourceType

_NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
_AGE_COLUMN = {
    "name": "Age",
    "type": "string",
    "format": "",
    "description": "CreationTimestamp is a timestamp representing the server time when this"
    " object was created.",
    "priority": 0,
}


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration, as kubectl's AGE column shows."""
    if seconds < -1:
        return "<invalid>"
    s = max(int(seconds), 0)
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    if days < 365 * 2:
        return f"{days}d"
    return f"{days // 365}y{days % 365}d" if days < 365 * 8 else f"{days // 365}y"


def _age(obj: Obj) -> str:
    stamp = obj["metadata"].get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    return human_duration((datetime.now(UTC) - parse_time(stamp)).total_seconds())


@cache
def _compiled(path: str) -> Any:
    # kubectl's JSONPath (filters like [?(@.type=="Ready")]) via jsonpath-ng's extended parser.
    return jsonpath_parser.ExtendedJsonPathParser().parse(
        "$" + path if path.startswith(".") else path
    )


def _custom_cell(column: Obj, obj: Obj) -> Any:
    matches = _compiled(column["jsonPath"]).find(obj)
    if not matches:
        return None
    value = matches[0].value
    kind = column.get("type")
    if kind == "date" and isinstance(value, str):
        try:
            return human_duration((datetime.now(UTC) - parse_time(value)).total_seconds())
        except ValueError:
            return "<invalid>"
    if kind == "string":
        return value if isinstance(value, str) else json.dumps(value)
    return value


def _pod_cells(obj: Obj) -> list[Any]:
    status = obj.get("status", {})
    containers = obj.get("spec", {}).get("containers", [])
    statuses = status.get("containerStatuses", [])
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(c.get("restartCount", 0) for c in statuses)
    reason = status.get("reason") or status.get("phase", "")
    for container in statuses:
        waiting = container.get("state", {}).get("waiting")
        terminated = container.get("state", {}).get("terminated")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
        elif terminated and terminated.get("reason"):
            reason = terminated["reason"]
    if obj["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return [
        f"{ready}/{len(containers)}",
        reason,
        restarts,
        _age(obj),
        status.get("podIP") or "<none>",
        obj.get("spec", {}).get("nodeName") or "<none>",
    ]


def _column(name: str, kind: str = "string", priority: int = 0) -> Obj:
    return {"name": name, "type": kind, "format": "", "description": name, "priority": priority}


_BUILTIN: dict[str, tuple[list[Obj], Callable[[Obj], list[Any]]]] = {
    "Pod": (
        [
            _column("Ready"),
            _column("Status"),
            _column("Restarts", "integer"),
            _AGE_COLUMN,
            _column("IP", priority=1),
            _column("Node", priority=1),
        ],
        _pod_cells,
    ),
    "Namespace": (
        [_column("Status"), _AGE_COLUMN],
        lambda o: [o.get("status", {}).get("phase", ""), _age(o)],
    ),
    "Secret": (
        [_column("Type"), _column("Data", "integer"), _AGE_COLUMN],
        lambda o: [o.get("type", ""), len(o.get("data") or {}), _age(o)],
    ),
    "ConfigMap": (
        [_column("Data", "integer"), _AGE_COLUMN],
        lambda o: [len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o)],
    ),
    "Service": (
        [
            _column("Type"),
            _column("Cluster-IP"),
            _column("External-IP"),
            _column("Port(s)"),
            _AGE_COLUMN,
        ],
        lambda o: [
            o["spec"].get("type", ""),
            o["spec"].get("clusterIP", ""),
            "<none>",
            ",".join(
                f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in o["spec"].get("ports", [])
            )
            or "<none>",
            _age(o),
        ],
    ),
    "PersistentVolumeClaim": (
        [_column("Status"), _column("Volume"), _column("Capacity"), _AGE_COLUMN],
        lambda o: [
            o.get("status", {}).get("phase", ""),
            o.get("spec", {}).get("volumeName", ""),
            o.get("status", {}).get("capacity", {}).get("storage", ""),
            _age(o),
        ],
    ),
    "StatefulSet": (
        [_column("Ready"), _AGE_COLUMN],
        lambda o: [
            f"{o.get('status', {}).get('readyReplicas', 0)}/{o['spec'].get('replicas', 1)}",
            _age(o),
        ],
    ),
    "Job": (
        [_column("Completions"), _AGE_COLUMN],
        lambda o: [
            f"{o.get('status', {}).get('succeeded', 0)}/{o['spec'].get('completions', 1)}",
            _age(o),
        ],
    ),
    "CustomResourceDefinition": (
        [_column("Created At", "date")],
        lambda o: [o["metadata"].get("creationTimestamp", "")],
    ),
    "Deployment": (
        [_column("Ready"), _column("Up-to-date", "integer"), _column("Available", "integer"),
         _AGE_COLUMN, _column("Containers", priority=1), _column("Images", priority=1)],
        lambda o: [
            f"{o.get('status', {}).get('readyReplicas', 0)}/{o['spec'].get('replicas', 1)}",
            o.get("status", {}).get("updatedReplicas", 0),
            o.get("status", {}).get("availableReplicas", 0),
            _age(o), *_containers(o),
        ],
    ),
    "ReplicaSet": (
        [_column("Desired", "integer"), _column("Current", "integer"), _column("Ready", "integer"),
         _AGE_COLUMN, _column("Containers", priority=1), _column("Images", priority=1)],
        lambda o: [
            o["spec"].get("replicas", 1), o.get("status", {}).get("replicas", 0),
            o.get("status", {}).get("readyReplicas", 0), _age(o), *_containers(o),
        ],
    ),
    "Role": ([_column("Created At", "date")], lambda o: [o["metadata"]["creationTimestamp"]]),
    "ClusterRole": (
        [_column("Created At", "date")], lambda o: [o["metadata"]["creationTimestamp"]]
    ),
    "RoleBinding": (
        [_column("Role"), _AGE_COLUMN],
        lambda o: [f"{o['roleRef']['kind']}/{o['roleRef']['name']}", _age(o)],
    ),
    "ClusterRoleBinding": (
        [_column("Role"), _AGE_COLUMN],
        lambda o: [f"{o['roleRef']['kind']}/{o['roleRef']['name']}", _age(o)],
    ),
}  # fmt: skip

# kubectl get events: the name is there, at priority 1 (shown with -o wide only).
_EVENT_COLUMNS = [
    _column("Last Seen"), _column("Type"), _column("Reason"), _column("Object"),
    _column("Message"), {**_NAME_COLUMN, "priority": 1}, _column("Count", "integer", 1),
]  # fmt: skip


def _event_cells(o: Obj) -> list[Any]:
    involved = o.get("involvedObject") or {}
    seen = o.get("lastTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp")
    return [
        _age({"metadata": {"creationTimestamp": seen}}) if seen else "<unknown>",
        o.get("type", ""), o.get("reason", ""),
        f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}",
        o.get("message", ""), o["metadata"]["name"], o.get("count", 1),
    ]  # fmt: skip


def _containers(o: Obj) -> list[str]:
    spec = (o["spec"].get("template") or {}).get("spec") or {}
    containers = spec.get("containers") or []
    return [",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers)]  # fmt: skip


def columns(rtype: ResourceType) -> list[Obj]:
    if rtype.custom:
        custom = [
            {
                "name": c["name"],
                "type": c.get("type", "string"),
                "format": c.get("format", ""),
                "description": c.get("description", ""),
                "priority": c.get("priority", 0),
            }
            for c in rtype.printer_columns
        ]
        return (
            [_NAME_COLUMN, *custom] if custom else [_NAME_COLUMN, {**_AGE_COLUMN, "type": "date"}]
        )
    if rtype.kind == "Event":
        return _EVENT_COLUMNS
    extra = _BUILTIN.get(rtype.kind, ([_AGE_COLUMN], lambda o: [_age(o)]))[0]
    return [_NAME_COLUMN, *extra]


def cells(rtype: ResourceType, obj: Obj) -> list[Any]:
    name = obj["metadata"]["name"]
    if rtype.custom:
        if not rtype.printer_columns:
            return [name, _age(obj)]
        return [name, *(_custom_cell(c, obj) for c in rtype.printer_columns)]
    if rtype.kind == "Event":
        return _event_cells(obj)
    builder = _BUILTIN.get(rtype.kind, ([], lambda o: [_age(o)]))[1]
    return [name, *builder(obj)]


def _row_object(obj: Obj, include: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


def table(
    rtype: ResourceType, objects: list[Obj], list_meta: Obj, include: str = "Metadata"
) -> Obj:
    rows = []
    for obj in objects:
        row: Obj = {"cells": cells(rtype, obj)}
        embedded = _row_object(obj, include)
        if embedded is not None:
            row["object"] = embedded
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns(rtype),
        "rows": rows,
    }
