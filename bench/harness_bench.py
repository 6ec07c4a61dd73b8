"""Harness figures: the cost of a turn beyond the model's own time, and resuming a long log."""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anthropic
from aiohttp import web
from cadre.harness.pricing import prices_for
from cadre.harness.sandbox_client import SandboxClient, StaticSandbox
from cadre.harness.session import Session, SessionConfig, replay
from cadre.harness.sessionlog import SessionLog
from cadre.scriptedmodel.scenario import Scenario
from cadre.scriptedmodel.server import ScriptedModel

from bench.results import Metric

TURNS = 200
EVENTS = 10_000
RUNS = 5


async def _turn_overhead() -> tuple[float, float]:
    steps: list[dict[str, Any]] = [
        {"text": f"part {i} ", "stop_reason": "max_tokens"} for i in range(TURNS - 1)
    ]
    steps.append({"text": "end"})
    model = ScriptedModel(Scenario.model_validate({"agents": {"bench": steps}}))
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
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    client = anthropic.AsyncAnthropic(api_key="bench", base_url=url)
    sandbox = SandboxClient(StaticSandbox("http://127.0.0.1:9", "unused"))
    config = SessionConfig(
        task="bench/t", agent="bench", role="r", prompt="go", model="claude-sonnet-4-6"
    )
    with tempfile.TemporaryDirectory() as folder:
        log = SessionLog.open(Path(folder) / "log.jsonl")
        began = time.perf_counter()
        outcome = await Session(
            config, log, client, sandbox, prices_for(config.model), lambda _: None
        ).run()
        wall = time.perf_counter() - began
        log.close()
    await client.close()
    await runner.cleanup()
    assert outcome["outcome"] == "Succeeded", outcome
    return (wall - served[0]) / TURNS * 1000, served[0] / TURNS * 1000


def _write_long_log(path: Path) -> None:
    log = SessionLog.open(path)
    batch: list[tuple[str, dict[str, Any]]] = [
        ("session.created", {"task": "b/t", "agent": "a", "model": "m"}),
        ("user.message", {"content": "go"}),
    ]
    turn = 0
    while len(log.events) + len(batch) < EVENTS:
        turn += 1
        tool = {
            "type": "tool_use",
            "id": f"toolu_{turn:06d}",
            "name": "bash",
            "input": {"command": f"echo {turn}"},
        }
        batch += [
            ("span.model_request_start", {"turn": turn}),
            (
                "span.model_request_end",
                {
                    "turn": turn,
                    "usage": {
                        "input_tokens": 1200,
                        "output_tokens": 80,
                        "cache_read_input_tokens": 900,
                        "cache_creation_input_tokens": 0,
                    },
                    "stop_reason": "tool_use",
                    "message_id": f"msg_{turn}",
                },
            ),
            (
                "agent.message",
                {
                    "content": [{"type": "text", "text": "Next I run the tests. " * 4}, tool],
                    "stop_reason": "tool_use",
                },
            ),
            ("agent.tool_use", {"tool_use_id": tool["id"], "name": "bash", "input": tool["input"]}),
            (
                "agent.tool_result",
                {
                    "tool_use_id": tool["id"],
                    "content": "exit code: 0\n--- stdout ---\n" + "ok " * 150,
                    "is_error": False,
                },
            ),
        ]
        if len(batch) > 500:
            log.append_all(batch)
            batch = []
    log.append_all(batch[: EVENTS - len(log.events)])
    log.close()


def _resume_figures() -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.jsonl"
        _write_long_log(path)
        resumes, reads = [], []
        for _ in range(RUNS):
            began = time.perf_counter()
            log = SessionLog.open(path)
            state = replay(log.events, prices_for("claude-sonnet-4-6"))
            resumes.append(time.perf_counter() - began)
            count = len(log.events)
            log.close()
            began = time.perf_counter()
            parsed = [json.loads(line) for line in path.read_bytes().splitlines()]
            reads.append(time.perf_counter() - began)
            assert len(parsed) == count == EVENTS
            assert state.turns > 0
    return statistics.median(resumes), statistics.median(resumes) / statistics.median(reads), EVENTS


def measure() -> list[Metric]:
    overhead, model_time = asyncio.run(_turn_overhead())
    resume, ratio, events = _resume_figures()
    turn_note = (
        f"per model call of a {TURNS}-turn session against the scripted model in the same"
        f" process: wall time minus the model server's own handling ({model_time:.2f} ms/turn);"
        " SDK streaming and fsync'd log writes included; one run"
    )
    return [
        Metric("harness_turn_overhead_ms", round(overhead, 3), "ms", turn_note, "<= 10"),
        Metric(
            "resume_seconds_10k_events",
            round(resume, 4),
            "s",
            f"open (lock, validate every line) and replay a {events}-event log; median of {RUNS}",
            "< 0.5",
        ),
        Metric(
            "resume_vs_read_ratio",
            round(ratio, 3),
            "ratio",
            f"the resume above / reading the file and json.loads of every line; medians of {RUNS}",
            "<= 3",
        ),
    ]
