"""The API server's storage: objects in memory, one global resourceVersion (as etcd's revision),
and a bounded history of changes that serves watches and consistent list pages.

Runs on one event loop; every change happens between two awaits, so nothing needs a lock.
Stored objects are never mutated in place: a change stores a new dict.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

GroupResource = tuple[str, str]
Key = tuple[str, str]
EventType = Literal["ADDED", "MODIFIED", "DELETED"]
ANY: GroupResource = ("*", "*")
"""Subscribe to ANY to see the changes of every resource (the in-process controllers do)."""


@dataclass(frozen=True)
class Change:
    """One write, kept in the history: the object after it and before it."""

    rv: int
    type: EventType
    resource: GroupResource
    obj: dict[str, Any]
    old: dict[str, Any] | None


@dataclass(eq=False)
class Subscription:
    """A watch's inbox; the store puts every change of its resource there."""

    resource: GroupResource
    queue: asyncio.Queue[Change] = field(default_factory=asyncio.Queue)


class TooOldError(Exception):
    """A resourceVersion older than the history kept (the watch must relist: 410 Gone)."""


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


class Store:
    def __init__(self, history: int = 20_000, first_rv: int = 1000) -> None:
        self._objects: dict[GroupResource, dict[Key, dict[str, Any]]] = {}
        self._history: deque[Change] = deque()
        self._history_limit = history
        self._rv = first_rv
        self._compacted = first_rv  # changes at or before this revision are forgotten
        self._subscriptions: dict[GroupResource, set[Subscription]] = {}
        self._by_uid: dict[str, tuple[GroupResource, Key]] = {}

    @property
    def revision(self) -> int:
        return self._rv

    @property
    def compacted(self) -> int:
        return self._compacted

    def get(self, resource: GroupResource, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get(resource, {}).get((namespace, name))

    def by_uid(self, uid: str) -> tuple[GroupResource, dict[str, Any]] | None:
        found = self._by_uid.get(uid)
        if found is None:
            return None
        resource, key = found
        obj = self._objects.get(resource, {}).get(key)
        return None if obj is None else (resource, obj)

    def items(self, resource: GroupResource, namespace: str | None = None) -> list[dict[str, Any]]:
        """Current objects in (namespace, name) order, as the API server lists them."""
        objects = self._objects.get(resource, {})
        keys = sorted(k for k in objects if namespace is None or k[0] == namespace)
        return [objects[k] for k in keys]

    def all_objects(self) -> Iterator[tuple[GroupResource, dict[str, Any]]]:
        for resource, objects in list(self._objects.items()):
            for obj in list(objects.values()):
                yield resource, obj

    def items_at(
        self, resource: GroupResource, namespace: str | None, rv: int
    ) -> list[dict[str, Any]]:
        """Objects as they were at revision ``rv``: the current ones with later changes undone."""
        if rv < self._compacted:
            raise TooOldError(rv)
        objects = dict(self._objects.get(resource, {}))
        for change in reversed(self._history):
            if change.rv <= rv:
                break
            if change.resource != resource:
                continue
            key = key_of(change.obj)
            if change.old is None:
                objects.pop(key, None)
            else:
                objects[key] = change.old
        keys = sorted(k for k in objects if namespace is None or k[0] == namespace)
        return [objects[k] for k in keys]

    def changes_since(self, resource: GroupResource, rv: int) -> list[Change]:
        if rv < self._compacted:
            raise TooOldError(rv)
        return [c for c in self._history if c.rv > rv and c.resource == resource]

    def write(
        self, resource: GroupResource, obj: dict[str, Any], change_type: EventType
    ) -> dict[str, Any]:
        """Store ``obj`` (ADDED/MODIFIED) or remove it (DELETED) at a new revision."""
        self._rv += 1
        stored = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self._rv)}}
        objects = self._objects.setdefault(resource, {})
        key = key_of(stored)
        old = objects.get(key)
        uid = stored["metadata"].get("uid", "")
        if change_type == "DELETED":
            objects.pop(key, None)
            self._by_uid.pop(uid, None)
        else:
            objects[key] = stored
            self._by_uid[uid] = (resource, key)
        change = Change(self._rv, change_type, resource, stored, old)
        self._history.append(change)
        while len(self._history) > self._history_limit:
            self._compacted = self._history.popleft().rv
        for subscription in self._subscriptions.get(resource, ()):
            subscription.queue.put_nowait(change)
        for subscription in self._subscriptions.get(ANY, ()):
            subscription.queue.put_nowait(change)
        return stored

    def subscribe(self, resource: GroupResource) -> Subscription:
        subscription = Subscription(resource)
        self._subscriptions.setdefault(resource, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.get(subscription.resource, set()).discard(subscription)
