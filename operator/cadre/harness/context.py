"""The context window, pure: each model's window, an Agent's context policy resolved to a plan,
and the builders that turn the conversation into what a request sends (with its moving cache
breakpoint) and into its compacted form.

Two ways to compact, chosen per model: the API's own (``compact_20260112``, beta
``compact-2026-01-12``: the response carries a compaction block and the API ignores what
precedes it) where the model has it, otherwise the harness's (the model is asked to summarise
the older turns; the summary replaces them, the last turns stay verbatim). Either way the
session log is the truth: a compaction is an event in it, and replaying the log rebuilds the
compacted conversation exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from cadre.api.agent import CompactionMode, ContextPolicy
from cadre.api.types import Obj

DEFAULT_WINDOW = 200_000
WINDOWS = {
    "claude-opus-4-6": 200_000,
    "claude-sonnet-4-6": 200_000,
    "claude-opus-4": 200_000,
    "claude-sonnet-4": 200_000,
    "claude-3-7-sonnet": 200_000,
    "claude-haiku-4": 200_000,
    "claude-3-5-haiku": 200_000,
}
"""Context windows by model name prefix (longest prefix wins); ``spec.context.windowTokens``
overrides. An unknown model gets ``DEFAULT_WINDOW``."""
SERVER_COMPACTION_MODELS = ("claude-sonnet-4-6", "claude-opus-4-6")
"""Models whose API compacts server-side (``compact_20260112``)."""
COMPACT_BETA = "compact-2026-01-12"
CONTEXT_MANAGEMENT_BETA = "context-management-2025-06-27"
COMPACTION_REQUEST = (
    "Your context window is nearly full, so the conversation so far will be replaced by your "
    "summary of it. Write that summary now: the Task, what you have done (files, commands, "
    "findings), what is left to do, and anything you must not forget. Do not call tools; "
    "answer with the summary only."
)
SUMMARY_HEADER = "Summary of your work on this Task so far (earlier turns were compacted):"
MAX_SUMMARY_INPUT_CHARS = 4000
"""A tool result longer than this is cut in a summary request that would not fit otherwise."""

Mode = Literal["server", "client", "off"]


@dataclass(frozen=True)
class ContextPlan:
    """An Agent's context policy, resolved for its model."""

    window: int
    trigger: int
    """Input tokens at which the conversation is compacted."""
    mode: Mode
    keep_recent_turns: int = 4
    instructions: str = ""
    clear_at: int | None = None
    """Input tokens at which the API clears old tool results (None: it never does)."""
    keep_tool_uses: int = 8

    def betas(self) -> list[str]:
        betas = [COMPACT_BETA] if self.mode == "server" else []
        return betas + ([CONTEXT_MANAGEMENT_BETA] if self.clear_at is not None else [])

    def context_management(self, compact: bool = True) -> Obj | None:
        """The request's ``context_management`` edits (clearing first, as the API applies
        them in order), or None when there are none. ``compact=False`` for requests that ask
        for a summary or a lesson: those must not be compacted themselves."""
        edits: list[Obj] = []
        if self.clear_at is not None:
            edits.append({
                "type": "clear_tool_uses_20250919",
                "trigger": {"type": "input_tokens", "value": self.clear_at},
                "keep": {"type": "tool_uses", "value": self.keep_tool_uses},
                "clear_at_least": {"type": "input_tokens", "value": self.window // 10},
            })  # fmt: skip
        if self.mode == "server" and compact:
            trigger = {"type": "input_tokens", "value": self.trigger}
            edit: Obj = {"type": "compact_20260112", "trigger": trigger}
            if self.instructions:
                edit["instructions"] = self.instructions
            edits.append(edit)
        return {"edits": edits} if edits else None


def window_for(model: str) -> int:
    matches = [prefix for prefix in WINDOWS if model.startswith(prefix)]
    return WINDOWS[max(matches, key=len)] if matches else DEFAULT_WINDOW


def plan_for(model: str, policy: ContextPolicy | None = None) -> ContextPlan:
    """``Auto`` compacts server-side where the model supports it, else client-side."""
    policy = policy or ContextPolicy()
    window = policy.window_tokens or window_for(model)
    mode: Mode
    if policy.compaction == CompactionMode.OFF:
        mode = "off"
    elif policy.compaction == CompactionMode.CLIENT:
        mode = "client"
    elif policy.compaction == CompactionMode.SERVER or model.startswith(SERVER_COMPACTION_MODELS):
        mode = "server"
    else:
        mode = "client"
    clearing = policy.clear_tool_results
    return ContextPlan(
        window=window,
        trigger=window * policy.compact_at_percent // 100,
        mode=mode,
        keep_recent_turns=policy.keep_recent_turns,
        instructions=policy.instructions,
        clear_at=window * clearing.at_percent // 100 if clearing else None,
        keep_tool_uses=clearing.keep_tool_uses if clearing else 8,
    )


def estimate(value: Any) -> int:
    """A cheap token estimate (JSON characters / 4) for what no response has measured yet."""
    return len(json.dumps(value, separators=(",", ":"))) // 4


def _blocks(content: Any) -> list[Obj]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def with_breakpoint(messages: list[Obj]) -> list[Obj]:
    """The messages as sent: the last block of the last message carries a cache breakpoint,
    so each request writes its whole prompt to the cache and the next one, which extends it,
    reads it back (the API finds the previous breakpoint within its 20-block lookback)."""
    if not messages:
        return messages
    last = messages[-1]
    blocks = _blocks(last["content"])
    if not blocks:
        return messages
    blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral"}}
    return [*messages[:-1], {**last, "content": blocks}]


def compaction_blocks(content: list[Obj]) -> int | None:
    """Where the last compaction block with a summary is in an answer, if there is one."""
    for index in range(len(content) - 1, -1, -1):
        if content[index].get("type") == "compaction" and content[index].get("content"):
            return index
    return None


def after_server_compaction(messages: list[Obj]) -> list[Obj]:
    """The conversation once the API compacted in its last answer: the Task's first message
    (the API ignores it, being before the block; it keeps the request well formed) and the
    answer from its compaction block on."""
    last = messages[-1]
    index = compaction_blocks(last["content"])
    if index is None:
        return messages
    return [messages[0], {"role": "assistant", "content": last["content"][index:]}]


def boundary(messages: list[Obj], keep_recent_turns: int) -> int | None:
    """Where the verbatim tail starts for a client-side compaction: at the answer
    ``keep_recent_turns`` answers back (an assistant message, so no tool result is cut from
    its call). None when there is nothing older than that to summarise."""
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if keep_recent_turns == 0:
        return len(messages) if len(messages) > 1 else None
    if len(answers) <= keep_recent_turns:
        return None
    start = answers[-keep_recent_turns]
    return start if start > 1 else None


def summary_request(messages: list[Obj], cut: int, instructions: str, fit: bool) -> list[Obj]:
    """The conversation before ``cut`` with the summary request appended to its last (user)
    message, so the request shares its prefix, and so its cache, with the turn that ended
    there. ``fit``: long tool results are shortened (the request would not fit otherwise;
    it then misses the cache)."""
    older = messages[:cut]
    if fit:
        older = [_shortened(m) for m in older]
    text = COMPACTION_REQUEST + (f"\n\n{instructions}" if instructions else "")
    last = older[-1]
    if last["role"] != "user":
        return [*older, {"role": "user", "content": text}]
    return [*older[:-1], {"role": "user", "content": [*_blocks(last["content"]),
                                                      {"type": "text", "text": text}]}]  # fmt: skip


def _shortened(message: Obj) -> Obj:
    if isinstance(message["content"], str):
        return message
    blocks = []
    for block in message["content"]:
        content = block.get("content")
        long = isinstance(content, str) and len(content) > MAX_SUMMARY_INPUT_CHARS
        if block.get("type") == "tool_result" and long:
            half = MAX_SUMMARY_INPUT_CHARS // 2
            omitted = len(content) - 2 * half
            cut = f"{content[:half]}\n[... {omitted} characters omitted ...]\n{content[-half:]}"
            block = {**block, "content": cut}
        blocks.append(block)
    return {**message, "content": blocks}


def after_client_compaction(prompt: str, summary: str, messages: list[Obj], cut: int) -> list[Obj]:
    """The conversation once summarised: the Task's prompt and the summary as its first
    message, then the verbatim tail from ``cut``."""
    first = {"role": "user", "content": [
        {"type": "text", "text": prompt},
        {"type": "text", "text": f"{SUMMARY_HEADER}\n{summary}"},
    ]}  # fmt: skip
    return [first, *messages[cut:]]
