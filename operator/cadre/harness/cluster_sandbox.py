"""The lazy sandbox of a session in a cluster: asked for through the Task's status at the first
tool call, then waited for until the operator reports it ready with its address.

The harness already watches its Tasks, so the wait follows that watch (``TaskCopies``)
instead of reading the Task again and again; a read every ``RECHECK_SECONDS`` remains as a
safety net should the watch be restarting.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cadre.api.task import parent_of
from cadre.api.types import Obj, SessionFields, session_of
from cadre.harness.sandbox_client import SandboxEndpoint, SandboxUnavailable
from cadre.harness.taskapi import TaskApi
from cadre.harness.tokens import token_digest

RECHECK_SECONDS = 5.0
"""How often a waiting session reads its Task itself, in case the watch misses a change."""
RECENT_VERSIONS = 16
"""Versions remembered per Task: enough that a write's own version is still known when the
watch delivers it just before the writer looks (a few more writes may follow it)."""


@dataclass
class TaskCopies:
    """The newest copy of each Task that the harness's watch delivered, and waits on them."""

    _latest: dict[str, Obj] = field(default_factory=dict)
    _changed: dict[str, asyncio.Event] = field(default_factory=dict)
    _recent: dict[str, deque[str]] = field(default_factory=dict)
    """Per Task, the resourceVersions of its latest copies, newest last."""

    def publish(self, task: Obj) -> None:
        """A copy from the watch (on the event loop's thread)."""
        name = task["metadata"]["name"]
        self._latest[name] = task
        recent = self._recent.setdefault(name, deque(maxlen=RECENT_VERSIONS))
        recent.append(str(task["metadata"].get("resourceVersion", "")))
        changed = self._changed.pop(name, None)
        if changed is not None:
            changed.set()

    def below(self, name: str) -> list[Obj]:
        """Copies of the Tasks that work for ``name``: delegated to it, or reviewing it."""
        return [t for t in self._latest.values() if parent_of(t) == name]

    def forget(self, name: str) -> None:
        """The Task was deleted."""
        self._latest.pop(name, None)
        self._recent.pop(name, None)

    async def wait_for(
        self,
        name: str,
        after: Obj,
        found: Callable[[Obj], bool],
        read: Callable[[], Awaitable[Obj]] | None,
        seconds: float,
    ) -> Obj | None:
        """The first copy of Task ``name``, not older than ``after`` (the answer of a write),
        for which ``found`` holds; None after ``seconds``.

        A watch delivers copies in order but may lag behind a write's answer, so a copy is
        taken only once the watch has delivered ``after``'s own version (versions are compared
        for equality only, as Kubernetes asks); ``read`` gets a fresh copy now and then, should
        the watch have skipped that version (a re-list after 410 Gone)."""
        if found(after):
            return after
        target = str(after["metadata"].get("resourceVersion", ""))
        deadline = time.monotonic() + seconds
        next_read = time.monotonic() + RECHECK_SECONDS
        while True:
            latest = self._latest.get(name)
            if latest is not None and target in self._recent.get(name, ()) and found(latest):
                return latest
            now = time.monotonic()
            if now >= deadline:
                return None
            if read is not None and now >= next_read:
                fresh = await read()
                if found(fresh):
                    return fresh
                next_read = time.monotonic() + RECHECK_SECONDS
            changed = self._changed.setdefault(name, asyncio.Event())
            wait = min(deadline, next_read) - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), max(wait, 0.0))


def _ready(task: Obj) -> bool:
    session = session_of(task.get("status"))
    return bool(session.get("sandboxReady") and session.get("sandboxAddress"))


@dataclass
class ClusterSandbox:
    """A session's sandbox, provided by the operator in answer to the Task's status."""

    api: TaskApi
    task: str
    token: str
    copies: TaskCopies
    wait_seconds: float = 300.0
    _endpoint: SandboxEndpoint | None = None

    async def endpoint(self) -> SandboxEndpoint:
        if self._endpoint is not None:
            return self._endpoint
        session: SessionFields = {
            "sandboxRequested": True,
            "sandboxTokenSHA256": token_digest(self.token),
        }
        written = await self.api.patch_status(self.task, {"session": session})

        ready = await self.copies.wait_for(
            self.task, written, _ready, lambda: self.api.task(self.task), self.wait_seconds
        )
        if ready is None:
            raise SandboxUnavailable(f"no sandbox was ready within {self.wait_seconds:g}s")
        address = session_of(ready.get("status")).get("sandboxAddress")
        self._endpoint = SandboxEndpoint(f"http://{address}", self.token)
        return self._endpoint

    def forget(self) -> None:
        """After a failed call: read the address again (the pod may have been recreated)."""
        self._endpoint = None
