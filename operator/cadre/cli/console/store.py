"""What the console knows: the Agents, Teams and Tasks its watches have delivered, kept in
memory (no database: a restart lists them again), and a version that moves with every change
so pages and live streams know when to redraw. Used from one event loop only."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from cadre.api.types import Obj

KINDS = ("agents", "teams", "tasks")
Key = tuple[str, str]


def key_of(obj: Obj) -> Key:
    return (str(obj["metadata"].get("namespace") or ""), str(obj["metadata"]["name"]))


@dataclass(frozen=True)
class Snapshot:
    """The objects at one version; pages render from it (lists, never changed afterwards)."""

    version: int
    agents: list[Obj]
    teams: list[Obj]
    tasks: list[Obj]
    problems: dict[str, str]
    """Per kind and namespace, why the console cannot read it (a refusal by RBAC, an
    unreachable server)."""
    synced: bool
    """Every kind has been listed at least once."""


class Store:
    def __init__(self, namespaces: tuple[str, ...] = ()) -> None:
        """``namespaces``: those watched (none: all namespaces at once)."""
        self.objects: dict[str, dict[Key, Obj]] = {kind: {} for kind in KINDS}
        self.expected = {(k, n) for k in KINDS for n in (namespaces or (None,))}
        self.listed: set[tuple[str, str | None]] = set()
        self.problems: dict[str, str] = {}
        self.version = 0
        self.closed = False
        self._changed = asyncio.Event()

    def close(self) -> None:
        """Wake every waiter for good: the console is stopping."""
        self.closed = True
        self._changed.set()

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def replace(self, kind: str, items: list[Obj], namespace: str | None) -> None:
        """A fresh list of ``kind`` in ``namespace`` (None: all), after a start, a lost watch
        or 410 Gone: what it no longer holds is gone."""
        kept = {k: o for k, o in self.objects[kind].items() if namespace and k[0] != namespace}
        self.objects[kind] = kept | {key_of(o): o for o in items}
        self.listed.add((kind, namespace))
        self.problems.pop(f"{kind} {namespace}", None)
        self._bump()

    def apply(self, kind: str, event: str, obj: Obj) -> None:
        """A watch event: ADDED, MODIFIED or DELETED."""
        if event == "DELETED":
            self.objects[kind].pop(key_of(obj), None)
        else:
            self.objects[kind][key_of(obj)] = obj
        self._bump()

    def trouble(self, kind: str, namespace: str | None, message: str) -> None:
        if self.problems.get(f"{kind} {namespace}") != message:
            self.problems[f"{kind} {namespace}"] = message
            self._bump()

    def snapshot(self) -> Snapshot:
        return Snapshot(
            version=self.version,
            agents=list(self.objects["agents"].values()),
            teams=list(self.objects["teams"].values()),
            tasks=list(self.objects["tasks"].values()),
            problems=dict(self.problems),
            synced=self.listed >= self.expected,
        )

    async def changed_since(self, version: int, patience: float) -> int:
        """The version once it is past ``version`` (or as it is after ``patience`` seconds)."""
        if self.version == version and not self.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), patience)
        return self.version
