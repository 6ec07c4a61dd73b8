"""Cancelling a Task no harness has taken: its Agent does not exist, or every slot of its Agent
is busy. ``spec.cancel`` is otherwise the harness's to act on (it stops the session and writes
the final status); a Task no session has started would wait for ever, so the operator ends it.
Pure builder; the handler writes it only if the Task has not moved on (resourceVersion)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cadre.api.conditions import merge_condition
from cadre.api.types import Obj

UNTAKEN_PHASES = (None, "", "Pending")
"""Phases in which no session of the Task has started: nothing runs that could be stopped."""
MESSAGE = "cancelled (spec.cancel) before any session started"


def cancelled_status(status: Obj, generation: Any, now: datetime | None = None) -> Obj:
    """``Cancelled``, with ``Succeeded=False`` and, if the Task was queued, ``Queued=False``
    (merge patches replace lists: every condition is sent)."""
    now = now or datetime.now(UTC)
    conditions = merge_condition(
        list(status.get("conditions") or []), "Succeeded", False, "Cancelled", MESSAGE,
        now=now, observed_generation=generation,
    )  # fmt: skip
    if any(c.get("type") == "Queued" for c in conditions):
        conditions = merge_condition(
            conditions, "Queued", False, "Cancelled", MESSAGE, now=now,
            observed_generation=generation,
        )  # fmt: skip
    return {
        "phase": "Cancelled",
        "conditions": conditions,
        "completionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
