"""Long sessions against the scripted model's context window (through the real SDK, a real
sandbox server): hundreds of turns whose tool outputs add up to many windows complete, on both
ways of compacting; the log replays to exactly the conversation each request sent; a harness
killed at random moments (before, during, after a compaction) ends with the same log."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from cadre.api.agent import CompactionMode, ContextPolicy
from cadre.harness.context import plan_for
from cadre.harness.pricing import prices_for
from cadre.harness.replay import replay
from cadre.harness.session import SessionConfig
from cadre.harness.sessionlog import read
from cadre.scriptedmodel.scenario import wants_summary

from tests.harness.conftest import ModelFactory, run_session, unmarked, work_requests
from tests.sandbox.conftest import SandboxProcess

MODEL = "claude-sonnet-4-6"
WINDOW = 40_000
CHUNK = 6_000
"""Characters each turn's tool result adds (about 1,500 tokens): 400 turns are ~15 windows."""
TURNS = 400
TURNS_KILLED = 80
"""The kill test's session: shorter (each restart costs a process start), still several
windows long."""


def long_scenario(turns: int = TURNS) -> dict[str, Any]:
    # One command writes a file per turn; each turn then reads its own (the read tool spawns no
    # process, and cuts files at 256 KiB): every result differs, as real ones do.
    lines = CHUNK // 60
    make = (
        "python3 -c \"[open('part-%d.txt' % p, 'w').writelines('part %d line %d ' % (p, i) "
        f"+ 'x' * 44 + chr(10) for i in range({lines})) for p in range({turns})]\""
    )
    steps: list[dict[str, Any]] = [
        {"text": "Making the data.", "tool_uses": [{"name": "bash", "input": {"command": make}}]}
    ]
    for i in range(1, turns):
        read = {"path": f"part-{i}.txt"}
        steps.append({"text": f"Pass {i}.", "tool_uses": [{"name": "read", "input": read}]})
    steps.append({"text": f"All {turns} passes done."})
    return {
        "agents": {"engineer": steps},
        "context_windows": {MODEL: WINDOW},
        "min_compaction_trigger": 1_000,
    }


def config(mode: CompactionMode) -> SessionConfig:
    policy = ContextPolicy(window_tokens=WINDOW, compaction=mode)
    return SessionConfig(
        task="team/long",
        agent="engineer",
        role="Writes code",
        prompt=f"Do the {TURNS} passes.",
        model=MODEL,
        context_plan=plan_for(MODEL, policy),
    )


def _turn_requests(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in work_requests(requests) if not wants_summary(r)]


def assert_replays_to_what_was_sent(events: list[Any], requests: list[dict[str, Any]]) -> None:
    """Replaying the log to each model call rebuilds the very conversation that call sent."""
    starts = [i for i, e in enumerate(events) if e["type"] == "span.model_request_start"]
    prices = prices_for(MODEL)
    # In order; a call logged as started may never have been sent (killed right after).
    remaining = iter(starts)
    for request in _turn_requests(requests):
        sent = unmarked(request["messages"])
        assert any(
            unmarked(replay(events[:index], prices).messages) == sent for index in remaining
        ), "a request sent a conversation that no replay of the log rebuilds"


@pytest.mark.parametrize("mode", [CompactionMode.SERVER, CompactionMode.CLIENT])
async def test_a_400_turn_session_many_windows_long_completes(
    mode: CompactionMode, scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, model = await scripted(long_scenario())
    path = tmp_path / "log.jsonl"
    outcome, _ = await run_session(url, sandbox, path, config(mode))
    assert (outcome["outcome"], outcome["result"]) == ("Succeeded", f"All {TURNS} passes done.")
    events = read(path)
    compactions = [e for e in events if e["type"] == "session.compacted"]
    assert len(compactions) >= 2
    assert {e["path"] for e in compactions} == {mode.value.lower()}
    results = sum(len(e["content"]) for e in events if e["type"] == "agent.tool_result")
    assert results // 4 > 5 * WINDOW  # the outputs alone are several windows
    # Every request fitted the window (the scripted model refuses one that does not).
    assert all(
        e["stop_reason"] != "model_context_window_exceeded"
        for e in events
        if e["type"] == "span.model_request_end"
    )
    assert_replays_to_what_was_sent(events, model.requests)
    state = replay(events, prices_for(MODEL))
    assert state.compactions == len(compactions)
    assert state.turns == TURNS + 1


async def test_clearing_old_tool_results_keeps_a_long_session_from_compacting(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, model = await scripted(long_scenario(TURNS_KILLED))
    policy = ContextPolicy.model_validate({"windowTokens": WINDOW, "compaction": "Client",
        "clearToolResults": {"atPercent": 50, "keepToolUses": 4}})  # fmt: skip
    session = dataclasses.replace(config(CompactionMode.CLIENT), prompt=f"Do the {TURNS_KILLED} "
                                  "passes.", context_plan=plan_for(MODEL, policy))  # fmt: skip
    path = tmp_path / "log.jsonl"
    outcome, _ = await run_session(url, sandbox, path, session)
    assert outcome["outcome"] == "Succeeded"
    events = read(path)
    cleared = [e["applied_edits"] for e in events if e.get("applied_edits")]
    assert cleared
    assert all(edit["type"] == "clear_tool_uses_20250919" for edits in cleared for edit in edits)
    # The API keeps the conversation under the compaction trigger by clearing: no compaction.
    assert not [e for e in events if e["type"] == "session.compacted"]
    edits = model.requests[-1]["context_management"]["edits"]
    assert [e["type"] for e in edits] == ["clear_tool_uses_20250919"]
    assert edits[0]["clear_at_least"] == {"type": "input_tokens", "value": WINDOW // 10}


def _essence(events: list[dict[str, Any]]) -> list[str]:
    """What the session did, without timing and the events a resume may repeat; usage is left
    out (after a kill, a re-issued request meets a warmer cache)."""
    skipped = {"session.resumed", "span.model_request_start", "span.model_request_end"}
    return [
        json.dumps({k: v for k, v in e.items() if k not in ("seq", "time", "usage")},
                   sort_keys=True)
        for e in events
        if e["type"] not in skipped
    ]  # fmt: skip


async def _harness(
    url: str, sandbox: SandboxProcess, log: Path, mode: CompactionMode, turns: int = TURNS_KILLED
) -> asyncio.subprocess.Process:
    token_file = log.parent / f"{log.stem}.token"
    token_file.write_text(sandbox.token)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cadre.harness.standalone",
        "--log", str(log), "--model-url", url, "--sandbox-url", f"http://127.0.0.1:{sandbox.port}",
        "--sandbox-token-file", str(token_file), "--agent", "engineer", "--task", "team/long",
        "--prompt", f"Do the {turns} passes.", "--model", MODEL,
        "--compaction", mode.value, "--window-tokens", str(WINDOW),
        env={**os.environ, "ANTHROPIC_API_KEY": "sk-test"},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


class _Tail:
    """The log's events as (type, turn), read incrementally (each line parsed once)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.events = path, 0, list[tuple[str, int]]()

    def update(self) -> list[tuple[str, int]]:
        if self.path.exists():
            with self.path.open("rb") as file:
                file.seek(self.offset)
                data = file.read()
            complete = data[: data.rfind(b"\n") + 1]  # the last line may be half written
            self.offset += len(complete)
            for line in complete.split(b"\n"):
                if line.strip(b"\x00"):
                    event = json.loads(line)
                    self.events.append((event["type"], int(event.get("turn") or 0)))
        return self.events


def _kill_points(reference: list[dict[str, Any]], mode: CompactionMode) -> dict[str, set[int]]:
    """Model turns to kill in, from an uninterrupted run: the call that compacts (server) or
    the summary request (client: its turn is the next one's), the call after a compaction,
    and the call before it."""
    turn, during, after, before = 0, set(), set(), set()
    for event in reference:
        if event["type"] == "span.model_request_start":
            turn = event["turn"]
        elif event["type"] == "session.compacted":
            during.add(turn if mode == CompactionMode.SERVER else turn + 1)
            after.add(turn + 1)
            before.add(turn - 1 if mode == CompactionMode.SERVER else turn)
    return {"during": during, "after": after, "before": before}


def _due(moment: str, events: list[tuple[str, int]], points: dict[str, set[int]]) -> bool:
    kind, turn = events[-1]
    previous = events[-2][0] if len(events) > 1 else ""
    if moment == "during" and kind == "span.compaction_start":
        return True  # client-side: the summary request is in flight
    if kind != "span.model_request_start":
        return False
    if moment == "after" and previous == "session.compacted":
        return True
    return moment in points and turn in points[moment] and previous != "session.resumed"


async def _run_with_kills(
    url: str, sandbox: SandboxProcess, log: Path, mode: CompactionMode,
    points: dict[str, set[int]], rng: random.Random,
) -> list[str]:  # fmt: skip
    """Kill the harness during, after and before compactions and at random moments; returns
    the moments it was killed at."""
    moments = ["during", "after", "before", "random"] * 2
    killed: list[str] = []
    tail = _Tail(log)
    for _ in range(100):
        proc = await _harness(url, sandbox, log, mode)
        try:
            start = len(tail.update())
            moment = moments[len(killed)] if len(killed) < len(moments) else None
            target = start + rng.randint(3, 20)
            while proc.returncode is None and moment is not None:
                events = tail.update()
                fresh = len(events) > start
                if fresh and (len(events) >= target if moment == "random" else _due(
                        moment, events, points)):  # fmt: skip
                    proc.send_signal(signal.SIGKILL)
                    await proc.wait()
                    killed.append(moment)
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.001)
            await proc.wait()
        finally:
            if proc.returncode is None:  # the test failed: leave no harness behind
                proc.kill()
                await proc.wait()
        if proc.returncode == 0:
            return killed
        assert proc.returncode == -signal.SIGKILL, f"the harness failed: {proc.returncode}"
    raise AssertionError("the session never finished")


@pytest.mark.parametrize("mode", [CompactionMode.SERVER, CompactionMode.CLIENT])
async def test_kills_around_compactions_change_nothing(
    mode: CompactionMode, scripted: ModelFactory, tmp_path: Path
) -> None:
    # Each answer takes 10 ms, as a (very fast) real model would: time to kill a call in flight.
    slow = {**long_scenario(TURNS_KILLED), "latency_seconds": 0.01}
    reference_url, _ = await scripted(slow)
    chaos_url, chaos_model = await scripted(slow)
    logs = []
    for name in ("reference", "chaos"):
        (tmp_path / name / "workspace").mkdir(parents=True)
    reference_sandbox = SandboxProcess(tmp_path / "reference" / "workspace")
    chaos_sandbox = SandboxProcess(tmp_path / "chaos" / "workspace")
    reference_sandbox.start()
    chaos_sandbox.start()
    try:
        proc = await _harness(reference_url, reference_sandbox, tmp_path / "reference.jsonl", mode)
        assert await proc.wait() == 0
        points = _kill_points(read(tmp_path / "reference.jsonl"), mode)
        killed = await _run_with_kills(
            chaos_url, chaos_sandbox, tmp_path / "chaos.jsonl", mode, points, random.Random(11)
        )
    finally:
        reference_sandbox.stop()
        chaos_sandbox.stop()
    assert killed == ["during", "after", "before", "random"] * 2
    logs = [read(tmp_path / "reference.jsonl"), read(tmp_path / "chaos.jsonl")]
    assert _essence(logs[1]) == _essence(logs[0])
    assert sum(e["type"] == "session.compacted" for e in logs[1]) >= 2
    assert logs[1][-1]["outcome"] == "Succeeded"
    assert_replays_to_what_was_sent(logs[1], chaos_model.requests)
