"""The few Kubernetes API calls the harness makes, run on threads (the client blocks)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import kubernetes

from cadre.api import GROUP, VERSION

Obj = dict[str, Any]
# Set by the operator on a delegated Task (the harness may not import the operator; a test
# checks they agree).
PARENT_LABEL = "cadre.dev/parent"
TEAM_LABEL = "cadre.dev/team"


class TaskApi:
    """The few calls the harness makes, on a thread (the kubernetes client blocks)."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.namespace = namespace

    def _get(self, plural: str, name: str) -> Obj:
        found: Obj = self.custom.get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, self.namespace, plural, name
        )
        return found

    async def agent(self, name: str) -> Obj:
        return await asyncio.to_thread(self._get, "agents", name)

    async def task(self, name: str) -> Obj:
        return await asyncio.to_thread(self._get, "tasks", name)

    async def patch_status(self, name: str, status: Obj) -> None:
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, self.namespace, "tasks", name, {"status": status},
        )  # fmt: skip

    def watch(self, emit: Callable[[str, Obj], None], stop: threading.Event) -> None:
        """List then watch Tasks forever (relisting on 410). A list is emitted whole, as
        ``("LIST", {"items": [...]})``, so the harness can order what it takes up."""
        while not stop.is_set():
            listed: Obj = self.custom.list_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, self.namespace, "tasks"
            )
            emit("LIST", listed)
            version = listed["metadata"]["resourceVersion"]
            watcher = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in watcher.stream(  # type: ignore[no-untyped-call]
                    self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                    "tasks", resource_version=version, timeout_seconds=30,
                ):  # fmt: skip
                    if stop.is_set():
                        return
                    emit(event["type"], event["object"])
            except kubernetes.client.ApiException as err:
                if err.status != 410:
                    raise
            finally:
                watcher.stop()  # type: ignore[no-untyped-call]

    async def team(self, name: str) -> Obj | None:
        try:
            return await asyncio.to_thread(self._get, "teams", name)
        except kubernetes.client.ApiException as err:
            if err.status == 404:
                return None
            raise

    async def children(self, parent: str) -> list[Obj]:
        """The Tasks ``parent`` delegated (the operator labels them with their parent)."""

        def listed() -> list[Obj]:
            found: Obj = self.custom.list_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, self.namespace, "tasks", label_selector=f"{PARENT_LABEL}={parent}"
            )
            return list(found["items"])

        return await asyncio.to_thread(listed)
