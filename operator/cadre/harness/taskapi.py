"""The few Kubernetes API calls the harness makes, run on threads (the client blocks)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

import kubernetes
import urllib3

from cadre.api import GROUP, VERSION, events
from cadre.api.names import PARENT_LABEL
from cadre.api.types import Obj

log = logging.getLogger(__name__)


_TRANSIENT = {410, 429, 500, 502, 503, 504}
RETRY_SECONDS = 30.0
"""How long a read or a status write is tried again through transient failures."""
T = TypeVar("T")


def _backoff(previous: float) -> float:
    """0.2 s, doubling, at most 5 s: quick after a blip, gentle on a struggling API server."""
    return min(max(previous * 2, 0.2), 5.0)


class TaskApi:
    """The few calls the harness makes, on a thread (the kubernetes client blocks)."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.core = kubernetes.client.CoreV1Api(client)
        self.namespace = namespace

    def _get(self, plural: str, name: str) -> Obj:
        found: Obj = self.custom.get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, self.namespace, plural, name
        )
        return found

    async def _call(self, call: Callable[..., T], *args: Any) -> T:
        """``call`` on a thread, repeated through transient failures (429, 5xx, a dropped
        connection) for up to RETRY_SECONDS: a session must not fail because the API server
        hiccuped once. Every call made this way is safe to repeat: reads, and merge patches
        of the status, which give the same object however often they are applied."""
        deadline = time.monotonic() + RETRY_SECONDS
        delay = 0.0
        while True:
            try:
                return await asyncio.to_thread(call, *args)
            except kubernetes.client.ApiException as err:
                if err.status not in _TRANSIENT or err.status == 410:
                    raise
                why = f"{err.status} {err.reason}"
                if time.monotonic() + _backoff(delay) > deadline:
                    raise
            except (urllib3.exceptions.HTTPError, OSError) as err:
                why = str(err)
                if time.monotonic() + _backoff(delay) > deadline:
                    raise
            delay = _backoff(delay)
            log.warning("Kubernetes API: %s; trying again in %.1fs", why, delay)
            await asyncio.sleep(delay)

    async def agent(self, name: str) -> Obj:
        return await self._call(self._get, "agents", name)

    async def task(self, name: str) -> Obj:
        return await self._call(self._get, "tasks", name)

    async def patch_status(
        self, name: str, status: Obj, resource_version: str | None = None
    ) -> Obj:
        """Merge ``status`` into the Task's; the Task as the API server stored it. With
        ``resource_version``, only if the Task is still at that version (else a 409)."""
        body: Obj = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        written = await self._call(
            self.custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, self.namespace, "tasks", name, body,
        )  # fmt: skip
        return cast(Obj, written)

    def watch(
        self, emit: Callable[[str, Obj], None], stop: threading.Event, timeout_seconds: int = 300
    ) -> None:
        """List then watch Tasks until ``stop``. A list is emitted whole, as
        ``("LIST", {"items": [...]})``, so the harness can order what it takes up.

        API servers end watches (their timeout, a restart, a load balancer's idle limit): a watch
        that ends normally resumes from the last version seen, without a list (the client's
        stream does that itself); one that fails (connection dropped, 410 Gone, 429, 5xx) lists
        again after a capped backoff, since events may have been missed. Only what retrying
        cannot fix (401, 403, 404) stops it."""
        version: str | None = None
        delay = 0.0
        while not stop.is_set():
            if delay:
                stop.wait(delay)
            watcher = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            try:
                if version is None:
                    listed: Obj = self.custom.list_namespaced_custom_object(  # type: ignore[assignment]
                        GROUP, VERSION, self.namespace, "tasks"
                    )
                    emit("LIST", listed)
                    version = listed["metadata"]["resourceVersion"]
                for event in watcher.stream(  # type: ignore[no-untyped-call]
                    self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                    "tasks", resource_version=version, timeout_seconds=timeout_seconds,
                ):  # fmt: skip
                    if stop.is_set():
                        return
                    emit(event["type"], event["object"])
                    version = event["object"]["metadata"].get("resourceVersion") or version
                    delay = 0.0
            except kubernetes.client.ApiException as err:
                if err.status not in _TRANSIENT:
                    raise
                version = None
                delay = 0.0 if err.status == 410 else _backoff(delay)
                log.warning("watching Tasks: %s %s; listing again", err.status, err.reason)
            except (urllib3.exceptions.HTTPError, OSError) as err:
                version, delay = None, _backoff(delay)
                log.warning("watching Tasks: %s; listing again in %.1fs", err, delay)
            finally:
                watcher.stop()  # type: ignore[no-untyped-call]

    async def team(self, name: str) -> Obj | None:
        try:
            return await self._call(self._get, "teams", name)
        except kubernetes.client.ApiException as err:
            if err.status == 404:
                return None
            raise

    async def policies(self) -> list[Obj]:
        """The namespace's Policies (the harness decides each tool call by those selecting its
        Agent)."""

        def listed() -> list[Obj]:
            found: Obj = self.custom.list_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, self.namespace, "policies"
            )
            return list(found["items"])

        try:
            return await self._call(listed)
        except kubernetes.client.ApiException as err:
            if err.status == 404:  # the Policy kind is not installed (CRDs not yet upgraded)
                return []
            raise  # anything else fails closed: the call waits and is tried again

    async def children(self, parent: str) -> list[Obj]:
        """The Tasks ``parent`` delegated (the operator labels them with their parent)."""

        def listed() -> list[Obj]:
            found: Obj = self.custom.list_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, self.namespace, "tasks", label_selector=f"{PARENT_LABEL}={parent}"
            )
            return list(found["items"])

        return await self._call(listed)

    async def record_event(self, event: Obj) -> None:
        """Create ``event``, or count it once more if it exists (``cadre.api.events``). Best
        effort, as client-go's recorder: a failure is logged, never raised."""
        name = event["metadata"]["name"]
        core: Any = self.core  # the Event is plain JSON, not the client's typed model
        ns = self.namespace

        def unless_conflict(call: Callable[..., Any], *args: Any) -> bool:
            try:
                call(*args)
            except kubernetes.client.ApiException as err:
                if err.status != 409:
                    raise
                return False
            return True

        def read(event_name: str) -> Obj | None:
            try:
                answer = core.read_namespaced_event(event_name, ns, _preload_content=False)
            except kubernetes.client.ApiException as err:
                if err.status == 404:
                    return None
                raise
            try:
                current: Obj = json.loads(answer.data)
            finally:
                answer.release_conn()
            return current

        def create_or_count() -> None:
            events.create_or_count(
                event,
                lambda body: unless_conflict(core.create_namespaced_event, ns, body),
                read,
                lambda n, body: unless_conflict(core.patch_namespaced_event, n, ns, body),
            )

        try:
            await self._call(create_or_count)
        except Exception:
            log.warning("event %s (%s) not recorded", event["reason"], name, exc_info=True)
