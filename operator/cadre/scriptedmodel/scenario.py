"""Scenario files: which agent gets which replies, turn by turn.

```yaml
agents:
  engineer:                      # matched by "You are engineer," in the system prompt
    - text: Let me look.
      tool_uses: [{name: bash, input: {command: ls}}]
    - choices:                   # picked by the last tool result
        - when_last_result_contains: "exit code: 0"
          text: All good.
        - text: Something failed.
    - fail_first: [{status: 429}] # errors served before this reply, once each
      text: Done.
lessons:                         # answers to the harness's end-of-Task lesson request
  engineer: Run the tests before saying done.
```

A reply's step is the number of assistant messages in the request, so a re-issued request
(after a crash or a retry) gets the same reply: the scripted model keeps no session state.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from cadre.harness.context import COMPACTION_REQUEST
from cadre.harness.session import LESSON_REQUEST
from cadre.scriptedmodel.context import visible_messages

StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence", "pause_turn", "refusal"]
_AGENT = re.compile(r"You are ([a-z0-9]([-a-z0-9]*[a-z0-9])?),")
_PROGRESS = re.compile(r"\[scripted-progress answers=(\d+)\]")
"""What the scripted model writes into its summaries: how many answers they cover. A real
model needs no such count; the script does, to know its step once earlier answers are gone."""


class ScenarioError(Exception):
    """The request cannot be answered from the scenario (answered as a clear API error)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolUse(_Strict):
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class InjectedError(_Strict):
    status: int = 429
    type: str = ""
    message: str = "injected by the scenario"
    cut_stream_after: int | None = None
    """Instead of an error status: stream this many events of the reply, then drop the
    connection (a stream cut mid-response)."""


class Reply(_Strict):
    text: str = ""
    tool_uses: list[ToolUse] = Field(default_factory=list)
    stop_reason: StopReason | None = None
    output_tokens: int | None = None
    when_last_result_contains: str | None = None
    when_prompt_contains: str | None = None
    """In ``choices``: match on the session's first user message (which Task this is)."""
    when_last_message_contains: str | None = None
    """In ``choices``: match on the last user message, whatever it holds (tool results or text,
    such as a reviewer's feedback)."""
    fail_first: list[InjectedError] = Field(default_factory=list)
    delay_seconds: float = 0.0
    """Wait this long before answering (a slow model, for timeouts)."""

    def stop(self) -> StopReason:
        return self.stop_reason or ("tool_use" if self.tool_uses else "end_turn")


class Choices(_Strict):
    choices: list[Reply]


class Scenario(_Strict):
    agents: dict[str, list[Reply | Choices]]
    lessons: dict[str, str] = Field(default_factory=dict)
    """What each agent answers when the harness asks for its lesson as a Task ends (outside
    the script's steps); an agent not listed answers with a lesson naming the Task."""
    context_windows: dict[str, int] = Field(default_factory=dict)
    """Context windows by model name prefix, over the API's (small ones make long sessions
    short to script)."""
    min_compaction_trigger: int = 50_000
    """The smallest ``trigger`` the ``compact_20260112`` edit accepts."""
    latency_seconds: float = 0.0
    """How long every answer takes (a reply's ``delay_seconds`` adds to it)."""
    min_cacheable_tokens: int = 0
    """Prefixes shorter than this are not cached (the API's minimum is 1024 or more; the
    default 0 because scripted prompts are tiny)."""

    @classmethod
    def load(cls, path: Path) -> Scenario:
        return cls.model_validate(yaml.safe_load(path.read_text()))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content", "")))
    return "\n".join(parts)


def agent_of(request: dict[str, Any]) -> str:
    system = _text_of(request.get("system", ""))
    match = _AGENT.search(system)
    if match is None:
        raise ScenarioError('no agent named in the system prompt (expected "You are <name>,")')
    return match[1]


def progress(messages: list[dict[str, Any]]) -> tuple[int, int]:
    """Answers summarised away by the latest compaction (from the count the scripted model
    wrote into its summary), and where the conversation after that summary starts."""
    for index in range(len(messages) - 1, -1, -1):
        content = messages[index].get("content")
        for block in [{"text": content}] if isinstance(content, str) else content or []:
            text = block.get("content") if block.get("type") == "compaction" else block.get("text")
            match = _PROGRESS.search(text or "") if isinstance(text, str) else None
            if match is not None:
                return int(match[1]), index
    return 0, 0


def step_of(request: dict[str, Any], steps: list[Reply | Choices] | None = None) -> int:
    """Which step of the script answers this request: one per earlier answer, those a
    compaction summarised included. A continuation (the request ends with the assistant's
    partial answer, after max_tokens or pause_turn) carries several steps' texts in that one
    message; they are counted by matching them."""
    messages = visible_messages(request.get("messages", []))
    summarised, start = progress(messages)
    step = summarised + sum(1 for m in messages[start:] if m.get("role") == "assistant")
    if not messages or messages[-1].get("role") != "assistant" or steps is None:
        return step
    remaining = _text_of(messages[-1].get("content"))
    step -= 1  # the step that began this answer
    while step < len(steps):
        entry = steps[step]
        text = entry.text if isinstance(entry, Reply) else ""
        if not text or not remaining.startswith(text):
            break
        remaining = remaining[len(text) :]
        step += 1
    return step


def summary_of(request: dict[str, Any]) -> str:
    """The scripted model's summary of a conversation (for either way of compacting)."""
    messages = visible_messages(request.get("messages", []))
    task = " ".join(first_message(request).split())[:200]
    result = " ".join(last_result(request).split())[-300:]
    return (
        f"Working on: {task}\nLatest tool result: {result}\n"
        f"[scripted-progress answers={step_of({'messages': messages})}]"
    )


def wants_summary(request: dict[str, Any]) -> bool:
    """Whether this is a harness's client-side compaction (its summary request closes the
    last user message)."""
    messages = request.get("messages", [])
    if not messages or messages[-1].get("role") != "user":
        return False
    content = messages[-1].get("content")
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
    last = blocks[-1] if blocks else {}
    return last.get("type") == "text" and str(last.get("text", "")).startswith(COMPACTION_REQUEST)


def last_result(request: dict[str, Any]) -> str:
    for message in reversed(request.get("messages", [])):
        if message.get("role") == "user" and isinstance(message.get("content"), list):
            results = [b for b in message["content"] if b.get("type") == "tool_result"]
            if results:
                return _text_of(results)
    return ""


def last_message(request: dict[str, Any]) -> str:
    messages = [m for m in request.get("messages", []) if m.get("role") == "user"]
    return _text_of(messages[-1].get("content")) if messages else ""


def first_message(request: dict[str, Any]) -> str:
    """The session's first user message: which Task this conversation works."""
    messages = request.get("messages", [])
    return _text_of(messages[0].get("content")) if messages else ""


def conversation_key(request: dict[str, Any]) -> str:
    """Tells conversations apart (for errors served once per conversation and step): the
    agent and the first block of the first message (a compacted conversation keeps it)."""
    messages = request.get("messages", [])
    content = messages[0].get("content") if messages else ""
    first = content if isinstance(content, str) else _text_of((content or [])[:1])
    return f"{agent_of(request)}|{first}"


def choose(scenario: Scenario, request: dict[str, Any]) -> tuple[str, int, Reply]:
    agent = agent_of(request)
    steps = scenario.agents.get(agent)
    if steps is None:
        raise ScenarioError(f"the scenario has no agent {agent!r}")
    if wants_summary(request):
        return agent, step_of(request), Reply(text=summary_of(request))
    if last_message(request) == LESSON_REQUEST:
        title = (first_message(request).splitlines() or [""])[0][:80]
        default = f"Finished '{title}'; check the result against its criteria before delivering."
        return agent, step_of(request), Reply(text=scenario.lessons.get(agent) or default)
    step = step_of(request, steps)
    if step >= len(steps):
        raise ScenarioError(f"the script of agent {agent!r} is exhausted at step {step + 1}")
    entry = steps[step]
    if isinstance(entry, Reply):
        return agent, step, entry
    result = last_result(request)
    prompt = first_message(request)
    for reply in entry.choices:
        if (
            reply.when_last_result_contains is not None
            and reply.when_last_result_contains not in result
        ):
            continue
        if reply.when_prompt_contains is not None and reply.when_prompt_contains not in prompt:
            continue
        if (
            reply.when_last_message_contains is not None
            and reply.when_last_message_contains not in last_message(request)
        ):
            continue
        return agent, step, reply
    raise ScenarioError(f"no choice of agent {agent!r} at step {step + 1} matches the last result")
