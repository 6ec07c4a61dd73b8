"""The scripted model enforces what the real API enforces of the context, read back through the
real SDK's own types: the window ("prompt is too long"), a cache that serves only prefixes sent
before, server-side compaction and tool-result clearing with their beta header, answers cut at
the window, and streams cut mid-response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types.beta import (
    BetaClearToolUses20250919EditResponse,
    BetaCompactionBlock,
    BetaCompactionIterationUsage,
)
from cadre.harness.model_errors import classify
from cadre.scriptedmodel.context import Block, PromptCache

from tests.harness.conftest import ModelFactory

MODEL = "claude-sonnet-4-6"
SYSTEM = [
    {"type": "text", "text": "You are engineer, an agent.", "cache_control": {"type": "ephemeral"}}
]
COMPACT = {
    "edits": [{"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 1000}}]
}


def _scenario(**extra: Any) -> dict[str, Any]:
    steps = [{"text": f"answer {i}"} for i in range(20)]
    return {
        "agents": {"engineer": steps},
        "context_windows": {MODEL: 5000},
        "min_compaction_trigger": 1000,
        **extra,
    }


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[anthropic.AsyncAnthropic] = []

    def make(url: str) -> anthropic.AsyncAnthropic:
        clients.append(anthropic.AsyncAnthropic(api_key="sk-test", base_url=url, max_retries=0))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


def _user(text: str, marked: bool = False) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text}
    if marked:
        block["cache_control"] = {"type": "ephemeral"}
    return {"role": "user", "content": [block]}


async def test_a_prompt_over_the_window_is_refused_as_the_api_refuses_it(
    scripted: ModelFactory, client_for: Any
) -> None:
    url, _ = await scripted(_scenario())
    client = client_for(url)
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(
            model=MODEL, max_tokens=100, system=SYSTEM, messages=[_user("x" * 30_000)]
        )
    assert caught.value.status_code == 400
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert "prompt is too long:" in caught.value.message
    assert "> 5000 maximum" in caught.value.message
    failure = classify(caught.value)
    assert failure is not None
    assert (failure.too_long, failure.retryable) == (True, False)


async def test_the_cache_serves_only_prefixes_sent_before(
    scripted: ModelFactory, client_for: Any
) -> None:
    url, _ = await scripted(_scenario())
    client = client_for(url)

    async def ask(messages: list[Any], system: Any = SYSTEM) -> Any:
        answer = await client.messages.create(
            model=MODEL, max_tokens=100, system=system, messages=messages
        )
        return answer.usage

    first = await ask([_user("a" * 400, marked=True)])
    assert first.cache_read_input_tokens == 0
    assert first.cache_creation_input_tokens > 0
    longer = [
        _user("a" * 400),
        {"role": "assistant", "content": "answer 0"},
        _user("b" * 400, marked=True),
    ]
    second = await ask(longer)
    whole_first = first.cache_creation_input_tokens + first.input_tokens
    assert second.cache_read_input_tokens == whole_first  # found by the lookback
    # Another system prompt: nothing of it was ever sent, nothing is read.
    other = [{**SYSTEM[0], "text": "You are engineer, another agent."}]
    third = await ask(longer, system=other)
    assert third.cache_read_input_tokens == 0
    # A prefix never marked is never cached: the same request without any marker reads none
    # of the conversation, only the system prompt it marks.
    fourth = await ask([_user("a" * 400), {"role": "assistant", "content": "x"}, _user("c")])
    assert 0 < fourth.cache_read_input_tokens < whole_first


def test_cache_entries_expire_and_the_lookback_is_20_blocks() -> None:
    cache = PromptCache()
    blocks = [Block(10, f"d{i}", None) for i in range(30)]
    blocks[0] = Block(10, "d0", 300.0)
    assert cache.use(blocks, now=0).cache_creation_input_tokens == 10
    assert cache.use(blocks, now=100).cache_read_input_tokens == 10
    assert cache.use(blocks, now=1000).cache_read_input_tokens == 0  # expired
    far = [*blocks[:-1], Block(10, "d29", 300.0)]  # 29 blocks after the cached one
    assert cache.use(far, now=1000).cache_read_input_tokens == 10  # (the first breakpoint)
    far_only = [Block(10, "d0", None), *blocks[1:-1], Block(10, "d29", 300.0)]
    fresh = PromptCache(entries={"d0": 2000.0})
    assert fresh.use(far_only, now=1000).cache_read_input_tokens == 0  # beyond the lookback


async def test_server_side_compaction_needs_its_beta_and_answers_with_a_compaction_block(
    scripted: ModelFactory, client_for: Any
) -> None:
    url, _ = await scripted(_scenario())
    client = client_for(url)
    messages = [_user("y" * 6000)]
    with pytest.raises(anthropic.BadRequestError, match="compact-2026-01-12"):
        await client.beta.messages.create(
            model=MODEL,
            max_tokens=100,
            system=SYSTEM,
            messages=messages,
            context_management=COMPACT,
        )
    with pytest.raises(anthropic.BadRequestError, match="not supported on model"):
        await client.beta.messages.create(
            model="claude-haiku-4-5",
            max_tokens=100,
            messages=messages,
            context_management=COMPACT,
            betas=["compact-2026-01-12"],
        )
    low = {
        "edits": [{"type": "compact_20260112", "trigger": {"type": "input_tokens", "value": 10}}]
    }
    with pytest.raises(anthropic.BadRequestError, match=r"trigger\.value"):
        await client.beta.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=messages,
            context_management=low,
            betas=["compact-2026-01-12"],
        )
    async with client.beta.messages.stream(
        model=MODEL,
        max_tokens=100,
        system=SYSTEM,
        messages=messages,
        context_management=COMPACT,
        betas=["compact-2026-01-12"],
    ) as stream:
        message = await stream.get_final_message()
    block = message.content[0]
    assert isinstance(block, BetaCompactionBlock)
    assert block.content
    assert [b.type for b in message.content] == ["compaction", "text"]
    iterations = message.usage.iterations or []
    assert isinstance(iterations[0], BetaCompactionIterationUsage)
    assert iterations[0].input_tokens + iterations[0].cache_read_input_tokens > 1500
    # The next request sends the block back: what precedes it is no longer counted.
    follow = [
        *messages,
        {
            "role": "assistant",
            "content": [b.model_dump(exclude_none=True) for b in message.content],
        },
        _user("go on"),
    ]
    counted = await client.beta.messages.count_tokens(
        model=MODEL, messages=follow, betas=["compact-2026-01-12"]
    )
    assert counted.input_tokens < 500


async def test_old_tool_results_are_cleared_when_the_edit_is_sent(
    scripted: ModelFactory, client_for: Any
) -> None:
    url, _ = await scripted(_scenario())
    client = client_for(url)
    messages: list[Any] = []
    for i in range(5):
        messages += [
            _user("start")
            if i == 0
            else {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"t{i - 1}", "content": "r" * 1200}
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": f"t{i}", "name": "bash", "input": {"command": "ls"}}
                ],
            },
        ]
    messages.append(
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t4", "content": "r" * 1200}],
        }
    )
    clear = {
        "edits": [
            {
                "type": "clear_tool_uses_20250919",
                "keep": {"type": "tool_uses", "value": 2},
                "trigger": {"type": "input_tokens", "value": 1000},
            }
        ]
    }
    message = await client.beta.messages.create(
        model=MODEL,
        max_tokens=100,
        system=SYSTEM,
        messages=messages,
        context_management=clear,
        betas=["context-management-2025-06-27"],
    )
    assert message.context_management is not None
    (edit,) = message.context_management.applied_edits
    assert isinstance(edit, BetaClearToolUses20250919EditResponse)
    assert edit.cleared_tool_uses == 3
    assert edit.cleared_input_tokens > 0


async def test_an_answer_reaching_the_window_stops_there(
    scripted: ModelFactory, client_for: Any
) -> None:
    url, _ = await scripted(
        {**_scenario(), "agents": {"engineer": [{"text": "z" * 8000, "output_tokens": 2000}]}}
    )
    client = client_for(url)
    message = await client.messages.create(
        model=MODEL, max_tokens=4000, system=SYSTEM, messages=[_user("w" * 14_000)]
    )
    assert message.stop_reason == "model_context_window_exceeded"
    total = message.usage.input_tokens + (message.usage.cache_creation_input_tokens or 0)
    assert total + message.usage.output_tokens == 5000


async def test_a_stream_cut_mid_response_is_a_stream_interruption(
    scripted: ModelFactory, client_for: Any
) -> None:
    steps = [{"text": "q" * 400, "fail_first": [{"cut_stream_after": 3}]}]
    url, _ = await scripted({"agents": {"engineer": steps}})
    client = client_for(url)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - whatever the SDK raises
        async with client.messages.stream(
            model=MODEL, max_tokens=100, system=SYSTEM, messages=[_user("hi")]
        ) as stream:
            await stream.get_final_message()
    failure = classify(caught.value)
    assert failure is not None, f"unclassified: {caught.value!r}"
    assert (failure.reason, failure.retryable) == ("ModelStreamInterrupted", True)
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)
