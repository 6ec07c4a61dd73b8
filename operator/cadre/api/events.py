"""Kubernetes Events as Cadre's components write them, counted rather than repeated (pure).

client-go's recorder aggregates identical events (same object, type, reason and message) into
one whose ``count`` and ``lastTimestamp`` grow; Cadre does the same without keeping state: the
Event's name is derived from what makes it identical, so a create that finds it (409) patches
the count instead (``count_patch``). The operator and the harness both write Events this way."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from cadre.api.types import Obj

MESSAGE_LIMIT = 1024


def event_name(involved: Mapping[str, Any], type_: str, reason: str, message: str) -> str:
    """``<object>.<digest>``: the same for identical events of one object, and a valid name."""
    meta = involved["metadata"]
    key = "\x00".join((str(meta.get("uid", "")), type_, reason, message))
    return f"{str(meta['name'])[:200]}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_event(
    involved: Mapping[str, Any],
    type_: str,
    reason: str,
    message: str,
    now: datetime,
    component: str,
    instance: str,
) -> Obj:
    """A core/v1 Event about ``involved``, reported by ``component`` (its ``instance``)."""
    meta = involved["metadata"]
    message = message[:MESSAGE_LIMIT]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": event_name(involved, type_, reason, message),
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid", ""),
        },
        "type": type_,
        "reason": reason,
        "message": message,
        "count": 1,
        "firstTimestamp": _stamp(now),
        "lastTimestamp": _stamp(now),
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance[:128],
    }


def count_patch(current: Obj, event: Obj) -> Obj:
    """The merge patch that counts ``event`` once more on the stored ``current``, on the
    condition that nobody changed it since it was read (two writers counting both count)."""
    return {
        "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
        "count": int(current.get("count") or 1) + 1,
        "lastTimestamp": event["lastTimestamp"],
    }


def create_or_count(
    event: Obj,
    create: Callable[[Obj], bool],
    read: Callable[[str], Obj | None],
    patch: Callable[[str, Obj], bool],
    count: bool = True,
) -> None:
    """Create ``event``; if it exists, count it once more (unless not ``count``). The caller's
    client does the I/O: ``create`` is False when the Event exists (409), ``read`` None when it
    is gone, ``patch`` False when another writer counted first (409: read it again)."""
    name = event["metadata"]["name"]
    for _ in range(3):
        if create(event) or not count:
            return
        current = read(name)
        if current is None:
            continue  # deleted in between: create it again
        if patch(name, count_patch(current, event)):
            return
