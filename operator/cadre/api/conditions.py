"""Pure helpers for ``status.conditions``: set one, find one, keep transition times honest."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cadre.api.meta import Condition, ConditionStatus


def find_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of ``type_``, if present."""
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    *,
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """A new list with ``type_`` set; ``lastTransitionTime`` moves only when status changes.

    Returns the whole list because a merge patch replaces lists: callers send all of it.
    """
    previous = find_condition(conditions, type_)
    since = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=observed_generation,
    )
    others = [c for c in conditions if c.type != type_]
    position = next((i for i, c in enumerate(conditions) if c.type == type_), len(others))
    return [*others[:position], updated, *others[position:]]


def merge_condition(
    conditions: Sequence[Mapping[str, Any]],
    type_: str,
    ok: bool | None,
    reason: str,
    message: str,
    *,
    now: datetime,
    observed_generation: int | None = None,
) -> list[dict[str, Any]]:
    """``set_condition`` on conditions as they come from the API (JSON), for status patches;
    ``ok`` None is ``Unknown`` (not decided yet)."""
    parsed = [Condition.model_validate(c) for c in conditions]
    status = (
        ConditionStatus.UNKNOWN
        if ok is None
        else (ConditionStatus.TRUE if ok else ConditionStatus.FALSE)
    )
    updated = set_condition(
        parsed, type_, status, reason, message, now=now, observed_generation=observed_generation
    )
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in updated]
