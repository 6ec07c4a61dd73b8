"""The operator's process state: its settings and what it remembers between events, created
once at start-up (``cadre operator``) and handed to every handler in kopf's memo.

Nothing here is a cache of the cluster (kopf's indexes are, ``cache.py``); these are the
operator's own recent actions, which the watch has not shown it yet. Losing them (a restart)
costs at most a repeated write, never a wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import kopf

from cadre.api.types import SessionFields
from cadre.operator.cache import Key
from cadre.operator.settings import Settings

STATE_KEY = "cadre.state"


@dataclass
class OperatorState:
    settings: Settings
    metrics_port: int = 0
    """Serve Prometheus /metrics here (0: not served)."""
    namespaces: int = 0
    """How many namespaces the operator watches one by one (0: the whole cluster)."""
    created: dict[Key, float] = field(default_factory=dict)
    """Sandboxes created whose pod the cache does not show yet, with when (monotonic): the
    Task's events in between do not create them all again."""
    accounts: set[str] = field(default_factory=set)
    """Namespaces whose shared sandbox ServiceAccount this process made sure of."""
    written: dict[Key, SessionFields] = field(default_factory=dict)
    """The sandbox fields last written to each Task (the operator is their only writer)."""
    reported: set[str] = field(default_factory=set)
    """Uids of ended Tasks whose Warning Event this process recorded (the Event's own name
    makes a repeat after a restart a no-op; this spares the request)."""
    straggling: dict[Key, float] = field(default_factory=dict)
    """When each Task was first seen out of step by the straggler sweep."""


def memo_for(state: OperatorState) -> kopf.Memo:
    """kopf's memo (``kopf.run(memo=...)``). kopf gives each handler a shallow copy of it, so
    every handler sees the one ``OperatorState``."""
    return kopf.Memo({STATE_KEY: state})


def state_of(memo: Any) -> OperatorState:
    """The operator's state from a handler's ``memo``."""
    found = memo.get(STATE_KEY) if memo is not None else None
    if not isinstance(found, OperatorState):
        raise kopf.PermanentError(
            "the operator was started without its state (run `cadre operator`)"
        )
    return found
