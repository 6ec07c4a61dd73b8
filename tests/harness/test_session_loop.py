"""The session loop against the scripted model (through the real anthropic SDK, streaming) and
a real sandbox server: tool use, every stop reason, every limit, retries, cache markers."""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest
from cadre.api.limits import Limits
from cadre.harness.pricing import prices_for
from cadre.harness.replay import replay
from cadre.harness.session import Session, SessionConfig, SessionLimits
from cadre.harness.sessionlog import SessionLog, read
from cadre.harness.task_status import effective_limits

from tests.harness.conftest import (
    ModelFactory,
    lesson_requests,
    run_session,
    sandbox_client,
    unmarked,
)
from tests.sandbox.conftest import SandboxProcess


def _config(prompt: str = "Write a file.", **limits: Any) -> SessionConfig:
    return SessionConfig(
        task="team/fix",
        agent="engineer",
        role="Writes code",
        prompt=prompt,
        model="claude-sonnet-4-6",
        limits=SessionLimits(**limits),
    )


TWO_STEPS = {
    "agents": {
        "engineer": [
            {
                "text": "I will write it.",
                "tool_uses": [
                    {"name": "bash", "input": {"command": "echo hi > greeting && cat greeting"}}
                ],
            },
            {
                "choices": [
                    {"when_last_result_contains": "hi", "text": "Done: greeting says hi."},
                    {"text": "It did not work."},
                ]
            },
        ]
    }
}


async def test_a_tool_call_runs_in_the_sandbox_and_the_session_succeeds(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, model = await scripted(TWO_STEPS)
    outcome, _ = await run_session(url, sandbox, tmp_path / "log.jsonl", _config())
    assert outcome["outcome"] == "Succeeded"
    assert outcome["result"] == "Done: greeting says hi."
    assert (sandbox.workspace / "greeting").read_text() == "hi\n"
    types = [e["type"] for e in read(tmp_path / "log.jsonl")]
    assert types == [
        "session.created", "user.message",
        "span.model_request_start", "span.model_request_end", "agent.message",
        "agent.tool_use", "agent.tool_result",
        "span.model_request_start", "span.model_request_end", "agent.message",
        "session.status_terminated",
    ]  # fmt: skip
    second = model.requests[1]
    assert second["stream"] is True
    result = second["messages"][-1]["content"][0]
    assert result["type"] == "tool_result"
    assert "hi" in result["content"]


async def test_the_stable_prefix_carries_cache_markers(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, model = await scripted(TWO_STEPS)
    await run_session(url, sandbox, tmp_path / "log.jsonl", _config())
    for request in model.requests:
        assert request["system"][-1]["cache_control"] == {"type": "ephemeral"}
        assert request["tools"][-1]["cache_control"] == {"type": "ephemeral"}
        assert "cache_control" not in request["tools"][0]
        assert request["system"][0]["text"].startswith(
            "You are engineer, an agent in a Cadre organization."
        )
    usages = [
        e["usage"] for e in read(tmp_path / "log.jsonl") if e["type"] == "span.model_request_end"
    ]
    assert usages[0]["cache_creation_input_tokens"] > 0
    assert usages[1]["cache_read_input_tokens"] == usages[0]["cache_creation_input_tokens"]


@pytest.mark.parametrize(
    ("steps", "outcome", "reason", "result"),
    [
        (
            [{"text": "Finished.", "stop_reason": "stop_sequence"}],
            "Succeeded",
            "Completed",
            "Finished.",
        ),
        (
            [{"text": "part one", "stop_reason": "max_tokens"}, {"text": ", part two"}],
            "Succeeded",
            "Completed",
            "part one, part two",
        ),
        (
            [{"text": "thinking", "stop_reason": "pause_turn"}, {"text": " and done"}],
            "Succeeded",
            "Completed",
            "thinking and done",
        ),
        ([{"text": "", "stop_reason": "refusal"}], "Failed", "Refusal", ""),
        (
            [
                {
                    "tool_uses": [{"name": "bash", "input": {"command": "tru"}}],
                    "stop_reason": "max_tokens",
                }
            ],
            "Failed",
            "OutputTruncated",
            "",
        ),
    ],
)
async def test_each_stop_reason(
    scripted: ModelFactory,
    sandbox: SandboxProcess,
    tmp_path: Path,
    steps: list[Any],
    outcome: str,
    reason: str,
    result: str,
) -> None:
    url, model = await scripted({"agents": {"engineer": steps}})
    ended, _ = await run_session(url, sandbox, tmp_path / "log.jsonl", _config())
    assert (ended["outcome"], ended["reason"], ended["result"]) == (outcome, reason, result)
    if len(steps) == 2:  # continued: the second request ends with the partial answer
        assert model.requests[1]["messages"][-1]["role"] == "assistant"


LOOP = {
    "agents": {
        "engineer": [
            {
                "text": f"step {i}",
                "tool_uses": [{"name": "bash", "input": {"command": f"echo {i}"}}],
            }
            for i in range(6)
        ]
    }
}


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"max_turns": 2}, "MaxTurnsReached"),
        ({"max_tokens": 2500}, "MaxTokensReached"),
        ({"max_cost_usd": Decimal("0.004")}, "MaxCostReached"),
    ],
)
async def test_each_limit_ends_the_session_naming_it(
    scripted: ModelFactory,
    sandbox: SandboxProcess,
    tmp_path: Path,
    limits: dict[str, Any],
    reason: str,
) -> None:
    url, _ = await scripted(LOOP)
    ended, _ = await run_session(url, sandbox, tmp_path / "log.jsonl", _config(**limits))
    assert ended["outcome"] == "Failed"
    assert ended["reason"] == reason


async def test_the_timeout_stops_a_slow_model_call(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, _ = await scripted({"agents": {"engineer": [{"text": "slow", "delay_seconds": 5}]}})
    ended, _ = await run_session(url, sandbox, tmp_path / "log.jsonl", _config(timeout_seconds=0.5))
    assert (ended["outcome"], ended["reason"]) == ("Failed", "TimeoutReached")


async def test_429_and_500_are_retried_by_the_sdk(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, model = await scripted(
        {"agents": {"engineer": [{"text": "ok", "fail_first": [{"status": 429}, {"status": 500}]}]}}
    )
    ended, _ = await run_session(url, sandbox, tmp_path / "log.jsonl", _config())
    assert ended["outcome"] == "Succeeded"
    assert len(model.requests) == 3


async def test_errors_beyond_the_retries_fail_the_session_clearly(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, _ = await scripted(
        {"agents": {"engineer": [{"text": "ok", "fail_first": [{"status": 529}] * 3}]}}
    )
    config = dataclasses.replace(_config(), model_patience_seconds=0)
    ended, _ = await run_session(url, sandbox, tmp_path / "log.jsonl", config, retries=1)
    assert (ended["outcome"], ended["reason"]) == ("Failed", "ModelOverloaded")
    assert "529" in ended["message"]


async def test_a_scenario_error_is_a_clear_api_error(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, _ = await scripted({"agents": {"reviewer": [{"text": "hi"}]}})
    ended, _ = await run_session(url, sandbox, tmp_path / "log.jsonl", _config())
    assert ended["reason"] == "ModelError"
    assert "the scenario has no agent 'engineer'" in ended["message"]


async def test_bad_tool_input_reaches_the_model_as_an_error_result(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    steps = [
        {"tool_uses": [{"name": "read", "input": {"path": "missing.txt"}}]},
        {"text": "The file is missing."},
    ]
    url, model = await scripted({"agents": {"engineer": steps}})
    ended, _ = await run_session(url, sandbox, tmp_path / "log.jsonl", _config())
    assert ended["outcome"] == "Succeeded"
    result = model.requests[1]["messages"][-1]["content"][0]
    assert result["is_error"] is True
    assert "missing.txt" in result["content"]


async def test_many_sessions_run_at_once_in_one_process(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, _ = await scripted(TWO_STEPS)
    outcomes = await asyncio.gather(
        *(
            run_session(url, sandbox, tmp_path / f"s{i}.jsonl", _config(prompt=f"task {i}"))
            for i in range(25)
        )
    )
    assert all(o["outcome"] == "Succeeded" for o, _ in outcomes)


@pytest.mark.parametrize(
    ("agent", "task", "expected"),
    [
        ({}, {}, SessionLimits(max_turns=200)),
        ({"maxTurns": 5}, {}, SessionLimits(max_turns=5)),
        # The Agent's limits are ceilings: a Task narrows them, never widens them.
        ({"maxTurns": 5}, {"maxTurns": 9}, SessionLimits(max_turns=5)),
        ({"maxTurns": 5}, {"maxTurns": 3}, SessionLimits(max_turns=3)),
        ({"maxCostUSD": "1.00"}, {"maxCostUSD": "99999"}, SessionLimits(max_cost_usd=Decimal(1))),
        ({"maxCostUSD": "1.00"}, {"maxCostUSD": "0.5"}, SessionLimits(max_cost_usd=Decimal("0.5"))),
        ({"timeout": "1h"}, {"timeout": "8760h"}, SessionLimits(timeout_seconds=3600.0)),
        ({"timeout": "2h"}, {"timeout": "90m"}, SessionLimits(timeout_seconds=5400.0)),
        ({"maxTokens": 10}, {"maxTurns": 4}, SessionLimits(max_turns=4, max_tokens=10)),
        (
            {"timeout": "1h30m"},
            {"maxCostUSD": "2.50"},
            SessionLimits(timeout_seconds=5400.0, max_cost_usd=Decimal("2.50")),
        ),
    ],
)
def test_effective_limits(
    agent: dict[str, Any], task: dict[str, Any], expected: SessionLimits
) -> None:
    assert effective_limits(Limits.model_validate(agent), Limits.model_validate(task)) == expected


async def test_the_lesson_is_asked_once_on_the_cached_prefix_and_logged_with_its_usage(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    lesson = "Check the file's content, not only that it exists."
    url, model = await scripted({**TWO_STEPS, "lessons": {"engineer": lesson}})
    path = tmp_path / "log.jsonl"
    outcome, _ = await run_session(url, sandbox, path, _config())
    assert outcome["outcome"] == "Succeeded"
    client = anthropic.AsyncAnthropic(api_key="sk-test", base_url=url)
    try:
        for _ in range(2):  # a harness restarted after the lesson does not ask again
            log = SessionLog.open(path)
            session = Session(_config(), log, client, sandbox_client(sandbox), prices_for(
                "claude-sonnet-4-6"), lambda _: None)  # fmt: skip
            assert await session.lesson() == lesson
            log.close()
    finally:
        await client.close()
    asked = lesson_requests(model.requests)
    assert len(asked) == 1
    last_turn = model.requests[-2]
    assert asked[0]["system"] == last_turn["system"]
    assert asked[0]["tools"] == last_turn["tools"]
    assert unmarked(asked[0]["messages"][:-1]) == [
        *unmarked(last_turn["messages"]),
        {"role": "assistant", "content": [{"type": "text", "text": "Done: greeting says hi."}]},
    ]
    # The conversation carries the cache breakpoint, the question after it does not: the
    # whole conversation is read from the cache.
    assert asked[0]["messages"][-2]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    events = read(path)
    assert [e["type"] for e in events][-2:] == ["session.status_terminated", "session.lesson"]
    state = replay(events, prices_for("claude-sonnet-4-6"))
    assert state.lesson == lesson
    assert state.usage["output_tokens"] > sum(
        e["usage"]["output_tokens"] for e in events if e["type"] == "span.model_request_end"
    )


async def test_no_lesson_is_asked_when_a_limit_ended_the_session(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    url, model = await scripted(TWO_STEPS)
    path = tmp_path / "log.jsonl"
    outcome, _ = await run_session(url, sandbox, path, _config(max_turns=1))
    assert outcome["reason"] == "MaxTurnsReached"
    client = anthropic.AsyncAnthropic(api_key="sk-test", base_url=url)
    log = SessionLog.open(path)
    try:
        session = Session(_config(max_turns=1), log, client, sandbox_client(sandbox),
                          prices_for("claude-sonnet-4-6"), lambda _: None)  # fmt: skip
        assert await session.lesson() == ""
    finally:
        log.close()
        await client.close()
    assert not lesson_requests(model.requests)


async def test_delegated_work_counts_against_the_tasks_max_cost(
    scripted: ModelFactory, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    """A Task's maxCostUSD caps its whole tree: once its own spend and what its delegated
    work cost reach it, the session makes no further call, and no lesson call either."""
    url, model = await scripted(LOOP)
    client = anthropic.AsyncAnthropic(api_key="sk-test", base_url=url)
    tools = sandbox_client(sandbox)
    log = SessionLog.open(tmp_path / "log.jsonl")
    spent_below = Decimal("0")
    try:
        session = Session(
            _config(max_cost_usd=Decimal("0.05")), log, client, tools,
            prices_for("claude-sonnet-4-6"), lambda _: None,
            delegated_cost=lambda: spent_below,
        )  # fmt: skip
        session.start()
        spent_below = Decimal("0.06")  # the children's spend arrives mid-session
        ended = await session.run()
        assert (ended["outcome"], ended["reason"]) == ("Failed", "MaxCostReached")
        assert "the Task's tree cost $0.06" in ended["message"]
        assert session.over_budget()
        assert await session.lesson() == ""
    finally:
        log.close()
        await tools.close()
        await client.close()
    assert not lesson_requests(model.requests)
    assert len(model.requests) <= 1  # at most the call already in flight
