"""The harness's side of the sandbox: where it is, and calling its tools by ``tool_use_id``.

A call that cannot reach the sandbox (it is restarting) is sent again with the same id until it
answers: the sandbox's store makes that safe, the call runs at most once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from cadre.api.types import Obj


@dataclass(frozen=True)
class SandboxEndpoint:
    url: str
    """``http://<pod IP>:<port>``"""
    token: str


class SandboxAccess(Protocol):
    """Gives a session its sandbox, creating it on first use (lazily)."""

    async def endpoint(self) -> SandboxEndpoint: ...


class SandboxUnavailable(Exception):  # noqa: N818 - a state the session reports
    pass


@dataclass(frozen=True)
class StaticSandbox:
    """A sandbox that already runs at a known address (tests, `cadre harness --sandbox-url`)."""

    url: str
    token: str

    async def endpoint(self) -> SandboxEndpoint:
        return SandboxEndpoint(self.url, self.token)


@dataclass(frozen=True)
class ToolOutcome:
    content: str
    is_error: bool
    replayed: bool = False
    reported: frozenset[str] = frozenset()
    """Harness-side tools: keys of news handed to the model (logged with the result)."""


class SandboxClient:
    def __init__(
        self,
        access: SandboxAccess,
        retry_for: float = 120.0,
        environment: dict[str, str] | None = None,
    ) -> None:
        self._access = access
        self._retry_for = retry_for
        self.environment = environment or {}
        """Variables for every call's commands (the egress proxy's, in ``Hosts`` mode)."""
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, tool_use_id: str, name: str, data: Any) -> ToolOutcome:
        request: dict[str, Any] = {"tool_use_id": tool_use_id, "name": name, "input": data}
        if self.environment and name == "bash":
            request["environment"] = self.environment
        status, body = await self._post("/v1/tool-calls", request)
        if status == 200:
            return ToolOutcome(
                str(body.get("content", "")),
                bool(body.get("is_error")),
                bool(body.get("replayed")),
            )
        # Bad input the sandbox refused: the model reads the message and can correct itself.
        return ToolOutcome(f"error: {_message(status, body)}", True)

    async def bundle(self, patterns: list[str], max_bytes: int) -> dict[str, Any]:
        """The deliverable files matching ``patterns`` (``cadre.sandbox.bundle``)."""
        status, body = await self._post(
            "/v1/bundle", {"patterns": patterns, "max_bytes": max_bytes}
        )
        if status != 200:
            raise SandboxUnavailable(f"the sandbox refused the delivery: {_message(status, body)}")
        return dict(body)

    async def _post(self, path: str, payload: Obj) -> tuple[int, Any]:
        """POST until the sandbox answers (sent again on a lost connection: tool calls are
        idempotent by id, bundles read only); 401 is final."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_for
        delay = 0.05
        while True:
            endpoint = await self._access.endpoint()
            try:
                async with self._session.post(
                    f"{endpoint.url}{path}",
                    json=payload,
                    headers={"Authorization": f"Bearer {endpoint.token}"},
                ) as response:
                    body = await response.json(content_type=None)
            except (TimeoutError, aiohttp.ClientConnectionError) as err:
                forget = getattr(self._access, "forget", None)
                if forget is not None:
                    forget()  # the sandbox may come back elsewhere: ask again where it is
                if loop.time() > deadline:
                    raise SandboxUnavailable(
                        f"the sandbox did not answer for {self._retry_for:g}s: {err}"
                    ) from err
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if response.status == 401:
                raise SandboxUnavailable("the sandbox refused the session token")
            return response.status, body


def _message(status: int, body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("error", {}).get("message", f"HTTP {status}"))
    return str(body)
