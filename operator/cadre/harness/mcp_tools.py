"""MCP tools, brain side: the harness is the MCP client of its Agent's MCP servers (streamable
HTTP, the official ``mcp`` SDK, which negotiates 2026-07-28 with servers that speak it and
falls back to the 2025-11-25 handshake with those that do not). The model is offered each
allowed tool as ``mcp__<server>__<tool>``; the harness calls it with the server's credential,
which lives only in the harness's environment, never in the sandbox (docs/control.md).

A call goes through the same Policies (MCP tools ask a human unless a rule allows them), size
limit and session log as every other tool. A call is sent with the model's ``tool_use_id`` in
its ``_meta``; an idempotent server can answer a repeat from it. A harness killed after a call
was sent and before its result was logged sends it again on resume: at least once, unless the
server deduplicates."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import RequestParamsMeta

from cadre.api.agent import McpServer
from cadre.api.names import MCP_SERVERS_ENV, MCP_TOOL_PREFIX, mcp_credential_env
from cadre.api.types import Obj
from cadre.harness.replay import State
from cadre.harness.sandbox_client import ToolOutcome
from cadre.harness.tls import trusting

PREFIX = MCP_TOOL_PREFIX
MAX_RESULT_CHARS = 30_000
"""As the sandbox cuts a command's output: one result may not flood the context window."""
TOOL_USE_META = "dev.cadre/toolUseId"


def tool_name(server: str, tool: str) -> str:
    return f"{PREFIX}{server}__{tool}"


@dataclass(frozen=True)
class Endpoint:
    """One MCP server as the harness reaches it."""

    server: McpServer
    credential: str | None = None
    """The header's value, scheme included."""

    @property
    def name(self) -> str:
        return self.server.name

    def headers(self) -> dict[str, str]:
        if self.credential is None or self.server.credential is None:
            return {}
        return {self.server.credential.header: self.credential}


def endpoints_from_env(env: Mapping[str, str]) -> list[Endpoint]:
    """The servers the operator checked (``CADRE_MCP_SERVERS``), each with its credential
    from the environment variable the operator filled from the Secret."""
    raw = env.get(MCP_SERVERS_ENV) or "[]"
    endpoints = []
    for item in json.loads(raw):
        server = McpServer.model_validate(item)
        credential = None
        if server.credential is not None:
            value = env.get(mcp_credential_env(server.name), "")
            scheme = server.credential.scheme
            credential = f"{scheme} {value}" if scheme else value
        endpoints.append(Endpoint(server, credential))
    return endpoints


def _text(result: Any) -> str:
    parts = []
    for block in result.content or []:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else f"[{getattr(block, 'type', 'content')}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content))
    text = "\n".join(parts)
    if len(text) > MAX_RESULT_CHARS:
        text = text[:MAX_RESULT_CHARS] + f"\n[cut at {MAX_RESULT_CHARS} characters]"
    return text


class _Connection:
    """One server's MCP session, opened on first use and held by a task of its own (the SDK's
    anyio scopes must be left by the task that entered them); reopened after it breaks."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._client: asyncio.Future[Client] | None = None
        self._closing = asyncio.Event()
        self._holder: asyncio.Task[None] | None = None

    async def client(self) -> Client:
        if self._client is None or (self._client.done() and self._client.exception()):
            self._closing = asyncio.Event()
            self._client = asyncio.get_running_loop().create_future()
            self._holder = asyncio.create_task(self._hold(self._client, self._closing))
        return await asyncio.shield(self._client)

    async def _hold(self, ready: asyncio.Future[Client], closing: asyncio.Event) -> None:
        server = self.endpoint.server
        try:
            async with httpx2.AsyncClient(
                headers=self.endpoint.headers(),
                verify=trusting(server.ca_bundle),
                timeout=httpx2.Timeout(server.timeout_seconds),
            ) as http:
                transport = streamable_http_client(server.url, http_client=http)
                timeout = server.timeout_seconds
                async with Client(
                    transport, mode="auto", read_timeout_seconds=timeout, cache=None
                ) as client:
                    ready.set_result(client)
                    await closing.wait()
        except Exception as err:  # any failure to connect is the caller's error
            if not ready.done():
                ready.set_exception(err)
            else:  # it broke while open: the next call reconnects
                self._client = None

    def broken(self) -> None:
        """Drop the session after a failed call; the next call opens a new one."""
        self._closing.set()
        self._client = None

    async def close(self) -> None:
        self._closing.set()
        if self._holder is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._holder, 5)


class McpTools:
    """The harness-side tools of an Agent's MCP servers."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self._connections = {e.name: _Connection(e) for e in endpoints}
        self._definitions: list[Obj] | None = None
        self._lock = asyncio.Lock()
        self.versions: dict[str, str] = {}
        """The protocol version negotiated with each server."""
        self.unavailable: dict[str, str] = {}
        """Servers whose tools could not be listed, and why."""

    @property
    def names(self) -> frozenset[str]:
        return frozenset(d["name"] for d in self._definitions or [])

    async def definitions(self) -> list[Obj]:
        """The tools offered to the model, listed once per harness (so every session's prompt
        prefix stays the same and its cache holds); a server that cannot be reached then is
        left out, and said why."""
        async with self._lock:
            if self._definitions is None:
                found: list[Obj] = []
                for name, connection in self._connections.items():
                    try:
                        found += await self._list(name, connection)
                    except Exception as err:  # reported; the other servers still work
                        self.unavailable[name] = f"{type(err).__name__}: {err}"
                self._definitions = found
            return list(self._definitions)

    async def _list(self, name: str, connection: _Connection) -> list[Obj]:
        client = await connection.client()
        self.versions[name] = client.protocol_version
        allowed = set(connection.endpoint.server.tools)
        tools, cursor = [], None
        while True:
            page = await client.list_tools(cursor=cursor)
            tools += [t for t in page.tools if not allowed or t.name in allowed]
            cursor = page.next_cursor
            if cursor is None:
                break
        return [
            {
                "name": tool_name(name, tool.name)[:128],
                "description": f"(MCP server {name}) {tool.description or tool.name}"[:4096],
                "input_schema": tool.input_schema,
            }
            for tool in tools
        ]

    async def call(self, tool_use_id: str, name: str, input: Obj, state: State) -> ToolOutcome:
        server, _, tool = name.removeprefix(PREFIX).partition("__")
        connection = self._connections.get(server)
        if connection is None or name not in self.names:
            return ToolOutcome(f"error: no MCP tool {name!r} is offered", True)
        try:
            client = await connection.client()
            # An open map the SDK types as a TypedDict with extra items (PEP 728).
            meta = cast(RequestParamsMeta, {TOOL_USE_META: tool_use_id})
            result = await client.call_tool(tool, input, meta=meta)
        except Exception as err:  # the model reads what failed
            connection.broken()
            return ToolOutcome(f"error: MCP server {server} failed: {type(err).__name__}: {err}",
                               True)  # fmt: skip
        return ToolOutcome(_text(result), bool(result.is_error))

    async def close(self) -> None:
        for connection in self._connections.values():
            await connection.close()
