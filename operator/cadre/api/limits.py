"""Limits on one session, set on an Agent and overridable per Task."""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field

from cadre.api.meta import ApiModel, Duration, UsdAmount


class Limits(ApiModel):
    """Bounds on one Task's session. When one is reached the Task ends Failed, naming it.

    The Agent's are ceilings: on a Task, each field set here narrows the Agent's value for that
    Task only, and cannot widen it (``ceiling_limits``).
    """

    max_turns: Annotated[int, Field(ge=1, le=10_000)] | None = None
    """Model calls the session may make."""
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None
    """Input plus output tokens the session may spend, cache reads included."""
    timeout: Duration | None = None
    """Wall-clock time from the session's start to its end, such as ``30m``."""
    max_cost_usd: UsdAmount | None = Field(default=None, alias="maxCostUSD")
    """Spend the session may reach, in US dollars as a decimal string (``"2.50"``)."""


DEFAULT_MAX_TURNS = 200
"""When neither the Task nor its Agent bounds a session at all: no runaway session by default."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """A Go duration (``1h30m``, ``90s``) in seconds; the API's pattern guarantees the form."""
    return sum(float(value) * _UNITS[unit] for value, unit in _DURATION.findall(text))


def ceiling_limits(agent: Limits, task: Limits) -> Limits:
    """The limits a Task's session runs under. The Agent's are ceilings set by its owner: a
    Task may narrow each of them, never widen it (a Task's ``maxCostUSD: "99999"`` must not
    lift its Agent's cap). With no limit set anywhere, ``DEFAULT_MAX_TURNS``, so a model that
    never stops cannot spend forever. Shown as the Task's ``status.limits``."""

    def narrower(name: str, measure: Callable[[Any], Any]) -> Any:
        mine, ceiling = getattr(task, name), getattr(agent, name)
        if mine is None or ceiling is None:
            return ceiling if mine is None else mine
        return min(ceiling, mine, key=measure)

    merged = Limits(
        max_turns=narrower("max_turns", int),
        max_tokens=narrower("max_tokens", int),
        timeout=narrower("timeout", parse_duration),
        max_cost_usd=narrower("max_cost_usd", Decimal),
    )
    if merged == Limits():
        return Limits(max_turns=DEFAULT_MAX_TURNS)
    return merged
