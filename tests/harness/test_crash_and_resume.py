"""The harness killed (SIGKILL) at random points of a 12-step task, restarted each time: the
final log equals an uninterrupted run's, and every tool call ran exactly once in the sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from pathlib import Path
from typing import Any

from cadre.harness.sessionlog import read
from cadre.sandbox.store import read_journal

from tests.harness.conftest import ModelFactory
from tests.sandbox.conftest import SandboxProcess

STEPS = 12
SLOW = {3, 8}  # commands that take a while: room to die between call and result


def _scenario() -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    for i in range(STEPS):
        command = f"{'sleep 0.3; ' if i in SLOW else ''}echo step-{i} >> steps.txt"
        steps.append(
            {"text": f"Step {i}.", "tool_uses": [{"name": "bash", "input": {"command": command}}]}
        )
    steps.append({"text": "All steps done."})
    return {"agents": {"engineer": steps}}


def _essence(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """What the session did, without timing: the events a resume may repeat are left out."""
    skipped = {"session.resumed", "span.model_request_start", "span.model_request_end"}
    return [
        (
            e["type"],
            json.dumps({k: v for k, v in e.items() if k not in ("seq", "time")}, sort_keys=True),
        )
        for e in events
        if e["type"] not in skipped
    ]


async def _harness(url: str, sandbox: SandboxProcess, log: Path) -> asyncio.subprocess.Process:
    token_file = log.parent / f"{log.stem}.token"
    token_file.write_text(sandbox.token)
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cadre.harness.standalone",
        "--log", str(log), "--model-url", url, "--sandbox-url", f"http://127.0.0.1:{sandbox.port}",
        "--sandbox-token-file", str(token_file), "--agent", "engineer",
        "--prompt", f"Do the {STEPS} steps.",
        env={**os.environ, "ANTHROPIC_API_KEY": "sk-test"},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


def _lines(path: Path) -> list[bytes]:
    """The log's complete lines: the harness may be halfway through writing the last one."""
    if not path.exists():
        return []
    complete = path.read_bytes().split(b"\n")[:-1]  # what follows the last newline is partial
    return [line for line in complete if line.strip(b"\x00")]


async def _run_with_kills(url: str, sandbox: SandboxProcess, log: Path, rng: random.Random) -> int:
    kills = 0
    for attempt in range(200):
        proc = await _harness(url, sandbox, log)
        try:
            start = len(_lines(log))
            between_call_and_result = attempt % 3 == 1
            target = start + rng.randint(3, 14)
            while proc.returncode is None:
                lines = _lines(log)
                last_type = json.loads(lines[-1]).get("type") if lines else None
                due = (
                    last_type == "agent.tool_use"
                    if between_call_and_result
                    else len(lines) >= target
                )
                if due and len(lines) > start:
                    proc.send_signal(signal.SIGKILL)
                    await proc.wait()
                    kills += 1
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.002)
        finally:
            if proc.returncode is None:  # the test failed: leave no harness behind
                proc.kill()
                await proc.wait()
        if proc.returncode == 0:
            return kills
        assert proc.returncode == -signal.SIGKILL, (
            f"the harness failed on its own: {proc.returncode}"
        )
    raise AssertionError("the session never finished")


async def test_kills_at_random_points_change_nothing(
    scripted: ModelFactory, tmp_path: Path
) -> None:
    url, _ = await scripted(_scenario())
    reference_dir, chaos_dir = tmp_path / "reference", tmp_path / "chaos"
    for folder in (reference_dir, chaos_dir):
        (folder / "workspace").mkdir(parents=True)
    reference_sandbox, chaos_sandbox = (
        SandboxProcess(reference_dir / "workspace"),
        SandboxProcess(chaos_dir / "workspace"),
    )
    reference_sandbox.start()
    chaos_sandbox.start()
    try:
        proc = await _harness(url, reference_sandbox, reference_dir / "log.jsonl")
        assert await proc.wait() == 0
        kills = await _run_with_kills(url, chaos_sandbox, chaos_dir / "log.jsonl", random.Random(7))
    finally:
        reference_sandbox.stop()
        chaos_sandbox.stop()
    assert kills >= 4
    reference, chaos = read(reference_dir / "log.jsonl"), read(chaos_dir / "log.jsonl")
    assert any(e["type"] == "session.resumed" for e in chaos)
    assert _essence(chaos) == _essence(reference)
    assert chaos[-1]["type"] == "session.status_terminated"
    assert chaos[-1]["outcome"] == "Succeeded"
    steps = (chaos_dir / "workspace" / "steps.txt").read_text().split()
    assert steps == [f"step-{i}" for i in range(STEPS)]  # each side effect exactly once
    journal = read_journal(chaos_dir / "workspace" / ".cadre-sandbox" / "executions.jsonl")
    executed = [entry["tool_use_id"] for entry in journal]
    assert len(executed) == len(set(executed)) == STEPS
