"""Kubernetes Events from the operator, counted rather than repeated (``cadre.api.events``).

kopf posts every event as a new object, so a handler retried every few seconds (an Agent
refused for its Secret, a Task waiting for a missing Agent) filled ``kubectl get events`` with
copies; these are aggregated as client-go's recorder does. ``once=True`` is for what happens
once in an object's life (a Task ending): a repeat after an operator restart is not counted.

Recording is best effort, as in client-go: a failure is logged, never raised into a handler.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cadre.api.events import build_event
from cadre.operator import apply

log = logging.getLogger(__name__)
COMPONENT = "cadre-operator"


def record(
    involved: Mapping[str, Any], type_: str, reason: str, message: str, *, once: bool = False
) -> None:
    """Create the Event, or count one more of it (not with ``once``)."""
    now = datetime.now(UTC)
    event = build_event(involved, type_, reason, message, now, COMPONENT, socket.gethostname())
    try:
        apply.create_or_count_event(event, count=not once)
    except Exception:
        name = event["metadata"]["name"]
        log.warning("event %s %s (%s) not recorded", type_, reason, name, exc_info=True)


def warn(involved: Mapping[str, Any], *, reason: str, message: str, once: bool = False) -> None:
    record(involved, "Warning", reason, message, once=once)


def info(involved: Mapping[str, Any], *, reason: str, message: str) -> None:
    record(involved, "Normal", reason, message)
