"""The real API's failures, each handled deliberately (through the real SDK against the scripted
model): rate limits, overload, server errors and cut streams are tried again after the SDK's
own retries, within a patience, and end the session with a reason naming them; an answer that
reaches the context window, or a prompt the API finds too long, is compacted once and goes on,
and a second time in a row ends the session ``ContextWindowExceeded``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from cadre.api.agent import CompactionMode, ContextPolicy
from cadre.harness.context import plan_for
from cadre.harness.model_errors import classify
from cadre.harness.pricing import prices_for
from cadre.harness.replay import replay
from cadre.harness.session import SessionConfig
from cadre.harness.sessionlog import read as read_log
from cadre.harness.task_status import build_usage_status

from tests.harness.conftest import ModelFactory, run_session
from tests.sandbox.conftest import SandboxProcess

MODEL = "claude-sonnet-4-6"


def _config(patience: float = 0.0, **policy: Any) -> SessionConfig:
    return SessionConfig(
        task="team/fix",
        agent="engineer",
        role="Writes code",
        prompt="Work.",
        model=MODEL,
        model_patience_seconds=patience,
        context_plan=plan_for(MODEL, ContextPolicy.model_validate(policy)),
    )


@pytest.mark.parametrize(
    ("injected", "reason"),
    [
        ({"status": 429, "type": "rate_limit_error"}, "ModelRateLimited"),
        ({"status": 529, "type": "overloaded_error"}, "ModelOverloaded"),
        ({"status": 500, "type": "api_error"}, "ModelError"),
        ({"cut_stream_after": 4}, "ModelStreamInterrupted"),
    ],
)
async def test_each_failure_beyond_the_patience_ends_the_session_naming_it(
    injected: dict[str, Any], reason: str,
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path,
) -> None:  # fmt: skip
    steps = [{"text": "x" * 300, "fail_first": [injected] * 8}]
    url, _ = await scripted({"agents": {"engineer": steps}})
    ended, _ = await run_session(url, sandbox, tmp_path / "log.jsonl", _config(), retries=1)
    assert (ended["outcome"], ended["reason"]) == ("Failed", reason)
    events = read_log(tmp_path / "log.jsonl")
    (error,) = [e for e in events if e["type"] == "span.model_request_error"]
    assert error["reason"] == reason
    assert error["status"] == injected.get("status")


async def test_a_request_the_api_refuses_is_not_tried_again(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    refused = {"status": 401, "type": "authentication_error", "message": "invalid x-api-key"}
    steps = [{"text": "never", "fail_first": [refused] * 5}]
    url, model = await scripted({"agents": {"engineer": steps}})
    ended, _ = await run_session(url, sandbox, tmp_path / "log.jsonl", _config(patience=60))
    assert (ended["outcome"], ended["reason"]) == ("Failed", "ModelError")
    assert "401" in ended["message"]
    assert len(model.requests) == 1


async def test_rate_limits_and_cut_streams_are_waited_out_within_the_patience(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    # The SDK tries each call twice (retries=1); the harness tries the calls again after
    # the retry-after the API asked for, and the stream cut mid-answer is asked again.
    limited = {"status": 429, "type": "rate_limit_error"}
    steps = [
        {"text": "Looking.", "tool_uses": [{"name": "bash", "input": {"command": "echo hi"}}],
         "fail_first": [limited] * 4},
        {"text": "y" * 400 + " Done.", "fail_first": [{"cut_stream_after": 5}] * 2},
    ]  # fmt: skip
    url, model = await scripted({"agents": {"engineer": steps}})
    path = tmp_path / "log.jsonl"
    ended, _ = await run_session(url, sandbox, path, _config(patience=60), retries=1)
    assert ended["outcome"] == "Succeeded"
    events = read_log(path)
    errors = [e for e in events if e["type"] == "span.model_request_error"]
    assert [e["reason"] for e in errors] == ["ModelRateLimited"] * 2 + [
        "ModelStreamInterrupted"
    ] * 2
    assert errors[0]["retry_after"] == pytest.approx(0.01)  # the scripted model's retry-after-ms
    # Each answer is in the log once, however often it was asked for.
    answers = [e for e in events if e["type"] == "agent.message"]
    assert len(answers) == 2
    state = replay(events, prices_for(MODEL))
    assert build_usage_status(state)["usage"]["modelErrors"] == 4
    assert len(model.requests) == 4 + 2 + 2  # every try reached the model


def _filler(tokens: int) -> str:
    return "f" * (tokens * 4)


async def test_an_answer_that_reaches_the_window_is_compacted_once_and_goes_on(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    read = "python3 -c \"print('a' * 8000)\""
    steps = [
        {"text": "Reading.", "tool_uses": [{"name": "bash", "input": {"command": read}}]},
        {"text": "Reading more.", "tool_uses": [{"name": "bash", "input": {"command": read}}]},
        # This answer would run past the window: the API stops it there.
        {"text": "A long answer", "output_tokens": 5000},
        {"text": " and finished."},
    ]
    scenario = {"agents": {"engineer": steps}, "context_windows": {MODEL: 8000}}
    url, _ = await scripted(scenario)
    path = tmp_path / "log.jsonl"
    config = _config(compaction="Client", windowTokens=8000, keepRecentTurns=1)
    ended, _ = await run_session(url, sandbox, path, config)
    assert (ended["outcome"], ended["result"]) == ("Succeeded", "A long answer and finished.")
    events = read_log(path)
    stops = [e["stop_reason"] for e in events if e["type"] == "span.model_request_end"]
    assert "model_context_window_exceeded" in stops
    (compacted,) = [e for e in events if e["type"] == "session.compacted"]
    assert (compacted["path"], compacted["reason"]) == ("client", "window")


async def test_a_second_overflow_in_a_row_ends_the_session_naming_the_window(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    steps = [
        {"text": "Reading.", "tool_uses": [{"name": "bash", "input": {"command": "echo one"}}]},
        {"text": _filler(2500), "output_tokens": 9000},
        {"text": _filler(2500), "output_tokens": 9000},
    ]
    scenario = {"agents": {"engineer": steps}, "context_windows": {MODEL: 8000}}
    url, _ = await scripted(scenario)
    config = _config(compaction="Client", windowTokens=8000, keepRecentTurns=1)
    ended, _ = await run_session(url, sandbox, tmp_path / "log.jsonl", config)
    assert (ended["outcome"], ended["reason"]) == ("Failed", "ContextWindowExceeded")
    assert "even after a compaction" in ended["message"]


@pytest.mark.parametrize("mode", [CompactionMode.CLIENT, CompactionMode.OFF])
async def test_a_prompt_the_api_finds_too_long_is_compacted_once_or_fails_named(
    mode: CompactionMode, scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    # The Agent believes in a bigger window than the endpoint has: the API says so.
    big = "python3 -c \"print('b' * 30000)\""
    steps = [
        {"text": "Reading.", "tool_uses": [{"name": "bash", "input": {"command": "echo one"}}]},
        {"text": "More.", "tool_uses": [{"name": "bash", "input": {"command": big}}]},
        {"text": "Done."},
    ]
    scenario = {"agents": {"engineer": steps}, "context_windows": {MODEL: 6000}}
    url, model = await scripted(scenario)
    path = tmp_path / "log.jsonl"
    config = _config(compaction=mode.value, windowTokens=100_000, keepRecentTurns=0)
    ended, _ = await run_session(url, sandbox, path, config)
    events = read_log(path)
    errors = [e for e in events if e["type"] == "span.model_request_error"]
    assert "prompt is too long" in errors[0]["message"]
    if mode == CompactionMode.OFF:
        assert (ended["outcome"], ended["reason"]) == ("Failed", "ContextWindowExceeded")
        return
    assert (ended["outcome"], ended["result"]) == ("Succeeded", "Done.")
    (compacted,) = [e for e in events if e["type"] == "session.compacted"]
    assert compacted["reason"] == "prompt_too_long"
    # The summary request was too long as well: asked again with the long result shortened.
    assert len(errors) == 2
    asked = [r for r in model.requests if "characters omitted" in str(r["messages"])]
    assert len(asked) == 1


@pytest.mark.parametrize(
    ("status", "error_type", "reason", "retryable"),
    [
        (200, "overloaded_error", "ModelOverloaded", True),  # an error event inside a stream
        (200, "rate_limit_error", "ModelRateLimited", True),
        (200, "api_error", "ModelError", True),
        (503, "api_error", "ModelError", True),
        (403, "permission_error", "ModelError", False),
        (404, "not_found_error", "ModelError", False),
    ],
)
def test_failures_are_classified_by_status_and_error_type(
    status: int, error_type: str, reason: str, retryable: bool
) -> None:
    response = httpx2.Response(
        status, request=httpx2.Request("POST", "http://model.invalid/v1/messages"),
        headers={"retry-after": "7"},
    )  # fmt: skip
    err = anthropic.APIStatusError(
        "failed", response=response, body={"type": "error", "error": {"type": error_type}}
    )
    failure = classify(err)
    assert failure is not None
    assert (failure.reason, failure.retryable) == (reason, retryable)
    assert failure.retry_after == (7.0 if retryable else None)
