"""What the harness adds to an MCP tool call: the same ``create_ticket`` call to a real MCP
server (the ``mcp`` SDK over HTTPS with a bearer token, tests/harness/mcp_server.py) made
through the harness's MCP tools (name mapping, ``_meta``, result to text) and by the SDK's
client directly, alternating, each on its own open session."""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx2
from cadre.harness.replay import State
from cadre.harness.tls import trusting
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.results import Metric
from tests.harness.mcp_server import McpServerProcess, serve_mcp
from tests.harness.test_mcp_tools import _tools

CALLS = 200
BLOCK = 20


async def _measure(server: McpServerProcess) -> tuple[float, float]:
    tools = _tools(server)
    await tools.definitions()
    # Configured as the harness configures its own, so only what the harness adds differs.
    seconds = 60  # the default McpServer.timeoutSeconds
    timeout = httpx2.Timeout(seconds)
    headers = {"Authorization": f"Bearer {server.token}"}
    harness, direct = [], []
    async with (
        httpx2.AsyncClient(
            headers=headers, verify=trusting(server.ca_bundle), timeout=timeout
        ) as http,
        Client(
            streamable_http_client(server.url, http_client=http),
            cache=None,
            read_timeout_seconds=seconds,
        ) as client,  # fmt: skip
    ):
        await client.list_tools()  # as the harness did: a 2026-07-28 call names a listed tool
        # In alternating blocks, so neither path always runs right after the other's answer.
        for block in range(CALLS // BLOCK):
            for index in range(BLOCK):
                start = time.perf_counter()
                outcome = await tools.call(f"toolu_{block}_{index}", "mcp__tickets__create_ticket",
                                           {"title": "bench"}, State())  # fmt: skip
                harness.append(time.perf_counter() - start)
                assert not outcome.is_error, outcome.content
            for _ in range(BLOCK):
                start = time.perf_counter()
                result = await client.call_tool("create_ticket", {"title": "bench"})
                direct.append(time.perf_counter() - start)
                assert not result.is_error
    await tools.close()
    return statistics.median(harness), statistics.median(direct)


def measure() -> list[Metric]:
    with tempfile.TemporaryDirectory() as folder, serve_mcp(Path(folder)) as server:
        harness, direct = asyncio.run(_measure(server))
    return [
        Metric("mcp_call_overhead_ratio", round(harness / direct, 3), "ratio",
               f"median of {CALLS} create_ticket calls through the harness's MCP tools "
               f"({harness * 1000:.2f} ms) / by the SDK client directly ({direct * 1000:.2f} ms), "
               f"in alternating blocks of {BLOCK}",
               "<= 1.2"),
    ]  # fmt: skip


if __name__ == "__main__":
    for metric in measure():
        print(metric)
