"""Limits on one session, set on an Agent and overridable per Task."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

from cadre.api.meta import ApiModel, Duration, UsdAmount


class Limits(ApiModel):
    """Bounds on one Task's session. When one is reached the Task ends Failed, naming it.

    On a Task, each field set here replaces the Agent's value for that Task only.
    """

    max_turns: Annotated[int, Field(ge=1, le=10_000)] | None = None
    """Model calls the session may make."""
    max_tokens: Annotated[int, Field(ge=1, le=1_000_000_000)] | None = None
    """Input plus output tokens the session may spend, cache reads included."""
    timeout: Duration | None = None
    """Wall-clock time from the session's start to its end, such as ``30m``."""
    max_cost_usd: UsdAmount | None = Field(default=None, alias="maxCostUSD")
    """Spend the session may reach, in US dollars as a decimal string (``"2.50"``)."""


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """A Go duration (``1h30m``, ``90s``) in seconds; the API's pattern guarantees the form."""
    return sum(float(value) * _UNITS[unit] for value, unit in _DURATION.findall(text))
