"""Watches: a stream of ADDED / MODIFIED / DELETED events from a resourceVersion on, with
bookmarks, initial events, server-side tables and ``410 Gone`` for a version compacted away,
as kube-apiserver serves them. A change that moves an object into or out of a selector is
ADDED or DELETED for that watcher."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from cadre.api.types import Obj
from cadre.localcluster.apiserver import tables
from cadre.localcluster.apiserver.cluster import Cluster
from cadre.localcluster.apiserver.http import flag, int_param, wants_table
from cadre.localcluster.apiserver.registry import ResourceType
from cadre.localcluster.apiserver.status import gone
from cadre.localcluster.apiserver.store import Change, TooOldError

Matcher = Callable[[Obj], bool]


def watch_event(change: Change, namespace: str | None, matches: Matcher) -> tuple[str, Obj] | None:
    """The event a watcher of ``namespace`` and ``matches`` sees for ``change``, if any."""
    obj = change.obj
    if namespace is not None and obj["metadata"].get("namespace") != namespace:
        return None
    if change.type == "DELETED":
        return ("DELETED", obj) if matches(obj) else None
    now_matches = matches(obj)
    before = change.old is not None and matches(change.old)
    if change.type == "ADDED" or (now_matches and not before):
        return ("ADDED", obj) if now_matches else None
    if now_matches:
        return ("MODIFIED", obj)
    return ("DELETED", obj) if before else None


@dataclass
class WatchRequest:
    """One watch as asked for: what it selects and how its events are written."""

    cluster: Cluster
    rtype: ResourceType
    namespace: str | None
    matches: Matcher
    as_table: bool
    include: str
    first: bool = True

    def encode(self, event_type: str, obj: Obj) -> bytes:
        shown = self.cluster.present(self.rtype, obj)
        if self.as_table and event_type not in ("ERROR", "BOOKMARK"):
            shown = tables.table(
                self.rtype, [shown], {"resourceVersion": shown["metadata"]["resourceVersion"]},
                self.include,
            )  # fmt: skip
            if not self.first:
                shown["columnDefinitions"] = []
            self.first = False
        return _line({"type": event_type, "object": shown})

    def bookmark(self, extra: Obj | None = None) -> bytes:
        meta: Obj = {"resourceVersion": str(self.cluster.store.revision)}
        if extra:
            meta["annotations"] = extra
        kind = {"kind": self.rtype.kind, "apiVersion": self.rtype.api_version}
        return _line({"type": "BOOKMARK", "object": {**kind, "metadata": meta}})


def _line(event: Obj) -> bytes:
    return (json.dumps(event) + "\n").encode()


async def serve_watch(
    request: web.Request,
    cluster: Cluster,
    rtype: ResourceType,
    namespace: str | None,
    matches: Matcher,
    bookmark_interval: float,
    on_started: Callable[[], None],
) -> web.StreamResponse:
    """Stream the watch until its timeout or the client goes; ``on_started`` runs once the
    headers are out (a watch is counted when it starts: it may stay open for hours)."""
    store = cluster.store
    rv = request.query.get("resourceVersion", "")
    bookmarks = flag(request, "allowWatchBookmarks")
    initial_events = flag(request, "sendInitialEvents")
    timeout = int_param(request, "timeoutSeconds") or 1800
    watch = WatchRequest(
        cluster, rtype, namespace, matches, wants_table(request),
        request.query.get("includeObject", "Metadata"),
    )  # fmt: skip
    response = web.StreamResponse(
        headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
    )
    subscription = store.subscribe(rtype.group_resource)
    try:
        await response.prepare(request)
        on_started()
        last = store.revision
        if rv in ("", "0") or initial_events:
            for obj in store.items(rtype.group_resource, namespace):
                if matches(obj):
                    await response.write(watch.encode("ADDED", obj))
            if initial_events and bookmarks:
                await response.write(watch.bookmark({"k8s.io/initial-events-end": "true"}))
        else:
            try:
                backlog = store.changes_since(rtype.group_resource, int(rv))
            except (TooOldError, ValueError):
                error = gone(f"too old resource version: {rv} ({store.compacted + 1})")
                await response.write(_line({"type": "ERROR", "object": error.status()}))
                return response
            last = int(rv)
            for change in backlog:
                event = watch_event(change, namespace, matches)
                if event is not None:
                    await response.write(watch.encode(*event))
                last = change.rv
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + bookmark_interval
        while True:
            now = time.monotonic()
            if now >= deadline:
                if bookmarks:
                    await response.write(watch.bookmark())
                break
            wait = min(deadline, next_bookmark if bookmarks else deadline) - now
            try:
                change = await asyncio.wait_for(subscription.queue.get(), timeout=max(wait, 0))
            except TimeoutError:
                if bookmarks and time.monotonic() >= next_bookmark:
                    await response.write(watch.bookmark())
                    next_bookmark = time.monotonic() + bookmark_interval
                continue
            if change.rv <= last:
                continue
            last = change.rv
            event = watch_event(change, namespace, matches)
            if event is not None:
                await response.write(watch.encode(*event))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        store.unsubscribe(subscription)
    return response
