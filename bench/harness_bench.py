"""Harness figures: the cost of a turn beyond the model's own time, and resuming a long log."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anthropic
from aiohttp import web
from cadre.harness.pricing import prices_for
from cadre.harness.replay import replay
from cadre.harness.sandbox_client import SandboxClient, StaticSandbox
from cadre.harness.session import Session, SessionConfig
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
    held = sessions_per_process()
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
        *held,
    ]


SESSIONS = 1000
BUDGET_MB = 500


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _idle_sessions(url: str, folder: Path) -> tuple[float, float]:
    """RSS before and with SESSIONS sessions each waiting on a model call."""
    client = anthropic.AsyncAnthropic(api_key="bench", base_url=url, max_retries=0)
    sandbox = SandboxClient(StaticSandbox("http://127.0.0.1:9", "unused"))
    prices = prices_for("claude-sonnet-4-6")
    before = _rss_mb()
    logs = [SessionLog.open(folder / f"s{i}.jsonl") for i in range(SESSIONS)]
    sessions = [
        Session(SessionConfig(task=f"b/t{i}", agent="bench", role="r", prompt=f"wait {i}",
                              model="claude-sonnet-4-6"),
                log, client, sandbox, prices, lambda _: None)
        for i, log in enumerate(logs)
    ]  # fmt: skip
    tasks = [asyncio.create_task(s.run()) for s in sessions]
    deadline = time.monotonic() + 120
    while (
        sum(
            1 for log in logs if log.events and log.events[-1]["type"] == "span.model_request_start"
        )
        < SESSIONS
    ):
        assert time.monotonic() < deadline, "the sessions did not all reach their model call"
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # every request is in flight and idle
    during = _rss_mb()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for log in logs:
        log.close()
    await client.close()
    return before, during


def sessions_per_process() -> list[Metric]:
    with tempfile.TemporaryDirectory() as folder:
        scenario = Path(folder) / "scenario.yaml"
        scenario.write_text(
            json.dumps({"agents": {"bench": [{"text": "late", "delay_seconds": 600}]}})
        )
        port = 18_000 + os.getpid() % 1000
        server = subprocess.Popen(
            [sys.executable, "-m", "cadre.scriptedmodel", "--scenario", str(scenario),
             "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            server.stdout.readline()  # "======== Running on ..."
            before, during = asyncio.run(_idle_sessions(f"http://127.0.0.1:{port}", Path(folder)))
        finally:
            server.kill()  # it would wait for the 600 s replies otherwise
            server.wait(timeout=30)
            if server.stdout is not None:
                server.stdout.close()
    per_session = (during - before) / SESSIONS
    capacity = int((BUDGET_MB - before) / per_session) if per_session > 0 else SESSIONS
    return [
        Metric(
            "harness_sessions_per_process", min(capacity, 100_000), "sessions",
            f"{SESSIONS} sessions held in one process, each waiting on a model call (scripted model"
            f" in another process): RSS {before:.0f} MB before, {during:.0f} MB with them,"
            f" {per_session * 1024:.0f} KB each; sessions that fit under {BUDGET_MB} MB at that"
            " rate",
            ">= 1000",
        ),
        Metric("harness_rss_mb_1000_idle_sessions", round(during, 1), "MB",
               f"RSS of one process holding {SESSIONS} sessions waiting on the model", "< 500"),
    ]  # fmt: skip
