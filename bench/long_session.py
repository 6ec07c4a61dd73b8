"""A long session's figures: how much of its input the prompt cache serves, what compaction
costs, and the harness's own time per turn, over a 200-turn session whose tool results add up
to several context windows, on both ways of compacting (the scripted model in this process).

The tool answers in the harness (no sandbox process), so the figures are the harness's and the
model API's alone."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import anthropic
from aiohttp import web
from cadre.api.agent import CompactionMode, ContextPolicy
from cadre.api.types import Obj
from cadre.harness.context import plan_for
from cadre.harness.pricing import prices_for
from cadre.harness.replay import USAGE_KEYS, State
from cadre.harness.sandbox_client import SandboxClient, StaticSandbox, ToolOutcome
from cadre.harness.session import Session, SessionConfig, SessionLimits
from cadre.harness.sessionlog import SessionLog, read
from cadre.scriptedmodel.scenario import Scenario
from cadre.scriptedmodel.server import ScriptedModel

from bench.results import Metric

TURNS = 200
WINDOW = 40_000
CHUNK = 6_000
"""Characters of each tool result (about 1,500 tokens): the results add up to 7.5 windows."""
MODEL = "claude-sonnet-4-6"


class _Fetch:
    """A harness-side tool answering a different chunk each call."""

    names = frozenset({"fetch"})
    definition: ClassVar[Obj] = {
        "name": "fetch",
        "description": "Fetch the next part of the data.",
        "input_schema": {"type": "object", "properties": {"part": {"type": "integer"}}},
    }

    async def call(self, tool_use_id: str, name: str, input: Obj, state: State) -> ToolOutcome:
        part = int(input.get("part", 0))
        return ToolOutcome(f"part {part}: " + f"{part:05d} " * (CHUNK // 6), False)


def _scenario() -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"text": f"Reading part {i}.", "tool_uses": [{"name": "fetch", "input": {"part": i}}]}
        for i in range(TURNS - 1)
    ]
    steps.append({"text": "Read every part."})
    return {
        "agents": {"bench": steps},
        "context_windows": {MODEL: WINDOW},
        "min_compaction_trigger": 1_000,
    }


async def _run(mode: CompactionMode) -> dict[str, float]:
    model = ScriptedModel(Scenario.model_validate(_scenario()))
    served = [0.0]

    @web.middleware
    async def timed(request: web.Request, handler: Any) -> web.StreamResponse:
        began = time.perf_counter()
        try:
            return await handler(request)  # type: ignore[no-any-return]
        finally:
            served[0] += time.perf_counter() - began

    app = model.app()
    app.middlewares.append(timed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    client = anthropic.AsyncAnthropic(
        api_key="bench", base_url=f"http://127.0.0.1:{runner.addresses[0][1]}"
    )
    sandbox = SandboxClient(StaticSandbox("http://127.0.0.1:9", "unused"))
    config = SessionConfig(
        task="bench/long", agent="bench", role="r", prompt="Read every part.", model=MODEL,
        tools=(), extra_tools=(_Fetch.definition,),
        context_plan=plan_for(MODEL, ContextPolicy(window_tokens=WINDOW, compaction=mode)),
        limits=SessionLimits(max_turns=TURNS + 10),
    )  # fmt: skip
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "log.jsonl"
            log = SessionLog.open(path)
            began = time.perf_counter()
            outcome = await Session(
                config, log, client, sandbox, prices_for(MODEL), lambda _: None,
                harness_tools=_Fetch(),
            ).run()  # fmt: skip
            wall = time.perf_counter() - began
            log.close()
            events = read(path)
    finally:
        await client.close()
        await runner.cleanup()
    assert outcome["outcome"] == "Succeeded", outcome
    calls = [e["usage"] for e in events if e["type"] == "span.model_request_end"]
    compactions = [e["usage"] for e in events if e["type"] == "session.compacted"]
    every = calls + compactions
    inputs = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    all_input = sum(u.get(k, 0) for u in every for k in inputs)
    all_tokens = sum(u.get(k, 0) for u in every for k in USAGE_KEYS)
    requests = len(model.requests)
    return {
        "cache_read_share": sum(u.get("cache_read_input_tokens", 0) for u in every) / all_input,
        "compaction_share": sum(u.get(k, 0) for u in compactions for k in USAGE_KEYS) / all_tokens,
        "turn_overhead_ms": (wall - served[0]) / requests * 1000,
        "compactions": len(compactions),
        "requests": requests,
        "results_windows": TURNS * CHUNK / 4 / WINDOW,
    }


def measure() -> list[Metric]:
    server = asyncio.run(_run(CompactionMode.SERVER))
    client = asyncio.run(_run(CompactionMode.CLIENT))
    how = (
        f"a {TURNS}-turn session against the scripted model (window {WINDOW} tokens, tool "
        f"results adding up to {server['results_windows']:.1f} windows); compactions: "
        f"{server['compactions']:.0f} server-side, {client['compactions']:.0f} client-side; "
        "one run each"
    )
    return [
        Metric("cache_read_share_long_session", round(server["cache_read_share"], 3), "ratio",
               f"cache-read input tokens / all input tokens, server-side compaction; {how}; "
               f"client-side: {client['cache_read_share']:.3f}", ">= 0.8"),
        Metric("cache_read_share_long_session_client", round(client["cache_read_share"], 3),
               "ratio", f"as cache_read_share_long_session, client-side compaction; {how}",
               ">= 0.8"),
        Metric("compaction_overhead_share", round(server["compaction_share"], 3), "ratio",
               f"tokens spent compacting / all tokens, server-side; {how}; client-side: "
               f"{client['compaction_share']:.3f}", "<= 0.1"),
        Metric("compaction_overhead_share_client", round(client["compaction_share"], 3), "ratio",
               f"as compaction_overhead_share, client-side (summary requests); {how}", "<= 0.1"),
        Metric("harness_turn_overhead_ms_long_session",
               round(max(server["turn_overhead_ms"], client["turn_overhead_ms"]), 3), "ms",
               "per model request, the worse of the two paths (server-side "
               f"{server['turn_overhead_ms']:.2f}, client-side {client['turn_overhead_ms']:.2f}): "
               f"wall time minus the scripted model's own handling; {how}", "<= 10"),
    ]  # fmt: skip


if __name__ == "__main__":
    for metric in measure():
        print(metric.name, metric.value, metric.note)
