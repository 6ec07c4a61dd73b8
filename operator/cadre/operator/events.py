"""Kubernetes Events from the operator, counted rather than repeated.

kopf posts every event as a new object, so a handler retried every few seconds (an Agent
refused for its Secret, a Task waiting for a missing Agent) filled ``kubectl get events`` with
copies. client-go's recorder aggregates identical events (same object, type, reason and
message) into one whose ``count`` and ``lastTimestamp`` grow; so does this, statelessly: the
Event's name is derived from what makes it identical, a create that finds it (409) patches the
count instead. ``once=True`` is for what happens once in an object's life (a Task ending): a
repeat after an operator restart is not counted.

Recording is best effort, as in client-go: a failure is logged, never raised into a handler.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cadre.api.types import Obj
from cadre.operator import apply

log = logging.getLogger(__name__)
COMPONENT = "cadre-operator"
_MESSAGE_LIMIT = 1024


def event_name(involved: Mapping[str, Any], type_: str, reason: str, message: str) -> str:
    """``<object>.<digest>``: the same for identical events of one object, and a valid name."""
    meta = involved["metadata"]
    key = "\x00".join((str(meta.get("uid", "")), type_, reason, message))
    return f"{str(meta['name'])[:200]}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def _stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_event(
    involved: Mapping[str, Any], type_: str, reason: str, message: str, now: datetime
) -> Obj:
    """A core/v1 Event about ``involved`` (pure)."""
    meta = involved["metadata"]
    message = message[:_MESSAGE_LIMIT]
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
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": socket.gethostname()[:128],
    }


def record(
    involved: Mapping[str, Any], type_: str, reason: str, message: str, *, once: bool = False
) -> None:
    """Create the Event, or count one more of it (not with ``once``)."""
    event = build_event(involved, type_, reason, message, datetime.now(UTC))
    try:
        apply.create_or_count_event(event, count=not once)
    except Exception:
        name = event["metadata"]["name"]
        log.warning("event %s %s (%s) not recorded", type_, reason, name, exc_info=True)


def warn(involved: Mapping[str, Any], *, reason: str, message: str, once: bool = False) -> None:
    record(involved, "Warning", reason, message, once=once)


def info(involved: Mapping[str, Any], *, reason: str, message: str) -> None:
    record(involved, "Normal", reason, message)
