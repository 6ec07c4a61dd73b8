"""``cadre.api.events.create_or_count``, the create-or-count protocol the operator and the
harness share, driven by an in-memory store answering as the API server does (201 or 409 on
create, 404 on read, 409 on a patch whose resourceVersion is stale)."""

from __future__ import annotations

from datetime import UTC, datetime

from cadre.api.events import build_event, create_or_count
from cadre.api.types import Obj

TASK = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": "t", "namespace": "default", "uid": "u1"}}  # fmt: skip


class Store:
    def __init__(self) -> None:
        self.events: dict[str, Obj] = {}
        self.version = 0
        self.before_patch: list[str] = []
        """Per patch, what another writer does first: "count" or "delete"."""

    def create(self, event: Obj) -> bool:
        name = event["metadata"]["name"]
        if name in self.events:
            return False
        self.version += 1
        meta = {**event["metadata"], "resourceVersion": str(self.version)}
        self.events[name] = {**event, "metadata": meta}
        return True

    def read(self, name: str) -> Obj | None:
        return self.events.get(name)

    def patch(self, name: str, body: Obj) -> bool:
        other = self.before_patch.pop(0) if self.before_patch else ""
        if other == "delete":
            self.events.pop(name)
        elif other == "count":
            self.patch(name, {"metadata": self.events[name]["metadata"],
                              "count": self.events[name]["count"] + 1})  # fmt: skip
        current = self.events.get(name)
        if (
            current is None
            or body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]
        ):
            return False
        self.version += 1
        current.update(count=body["count"])
        current["metadata"]["resourceVersion"] = str(self.version)
        return True


def _record(store: Store, count: bool = True) -> None:
    event = build_event(TASK, "Warning", "EgressRefused", "no", datetime.now(UTC), "c", "i")
    create_or_count(event, store.create, store.read, store.patch, count)


def test_repeats_count_on_one_event_and_a_concurrent_count_is_not_lost() -> None:
    store = Store()
    _record(store)
    _record(store)
    assert [e["count"] for e in store.events.values()] == [2]
    store.before_patch = ["count"]  # another writer counts between our read and our patch
    _record(store)
    assert [e["count"] for e in store.events.values()] == [4]


def test_an_event_deleted_between_read_and_patch_is_created_again() -> None:
    store = Store()
    _record(store)
    store.before_patch = ["delete"]
    _record(store)
    assert [e["count"] for e in store.events.values()] == [1]


def test_once_only_events_are_not_counted_again() -> None:
    store = Store()
    _record(store, count=False)
    _record(store, count=False)
    assert [e["count"] for e in store.events.values()] == [1]
