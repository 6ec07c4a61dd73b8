"""Keeping the store current as an informer does: list, then watch from the list's
resourceVersion, list again after ``410 Gone`` or a lost connection (with a growing pause).
A refusal (RBAC) is shown on the pages instead of the data, and retried."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiohttp

from cadre.api.types import Obj
from cadre.cli.console.kubeapi import KubeApi, KubeApiError
from cadre.cli.console.store import KINDS, Store

log = logging.getLogger(__name__)
GROUP_PATH = "/apis/cadre.dev/v1alpha1"
WATCH_SECONDS = 300
"""Each watch request ends after this (the server's ``timeoutSeconds``); the next one goes on
from the last version seen, as client-go's reflector does."""
MAX_PAUSE = 30.0


def collection_path(kind: str, namespace: str | None) -> str:
    return f"{GROUP_PATH}/namespaces/{namespace}/{kind}" if namespace else f"{GROUP_PATH}/{kind}"


class _Relist(Exception):  # noqa: N818 - control flow: the watch must start again from a list
    pass


async def _watch(api: KubeApi, store: Store, kind: str, path: str, version: str) -> str:
    """Apply watch events until the server ends the watch; the last version seen."""
    stream = api.lines(
        path, watch="true", resourceVersion=version, allowWatchBookmarks="true",
        timeoutSeconds=str(WATCH_SECONDS),
    )  # fmt: skip
    async with contextlib.aclosing(stream):  # cancelled: its connection closes now, not at GC
        async for line in stream:
            version = _apply(store, kind, json.loads(line), version)
    return version


def _apply(store: Store, kind: str, event: Obj, version: str) -> str:
    """One watch event into the store; the version it brings."""
    obj: Obj = event.get("object") or {}
    if event.get("type") == "ERROR":
        if obj.get("code") == 410:
            raise _Relist
        raise KubeApiError(int(obj.get("code") or 500), str(obj.get("message")))
    if event.get("type") != "BOOKMARK":
        store.apply(kind, str(event["type"]), obj)
    return str((obj.get("metadata") or {}).get("resourceVersion") or version)


async def keep_current(api: KubeApi, store: Store, kind: str, namespace: str | None) -> None:
    """Runs until cancelled."""
    path = collection_path(kind, namespace)
    pause = 0.5
    while True:
        try:
            listed = await api.get(path)
            store.replace(kind, listed.get("items") or [], namespace)
            version = str(listed["metadata"]["resourceVersion"])
            pause = 0.5
            while True:
                version = await _watch(api, store, kind, path, version)
        except _Relist:
            continue
        except (KubeApiError, aiohttp.ClientError, OSError, ValueError) as err:
            where = f"namespace {namespace}" if namespace else "all namespaces"
            store.trouble(kind, namespace, f"cannot read {kind} in {where}: {err}")
            log.warning("reading %s: %s (again in %.1fs)", kind, err, pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, MAX_PAUSE)


def start_watches(
    api: KubeApi, store: Store, namespaces: tuple[str, ...]
) -> list[asyncio.Task[None]]:
    """One list-and-watch per kind and namespace (none given: one per kind, cluster-wide)."""
    return [
        asyncio.create_task(keep_current(api, store, kind, ns), name=f"watch {kind} {ns}")
        for kind in KINDS
        for ns in namespaces or (None,)
    ]
