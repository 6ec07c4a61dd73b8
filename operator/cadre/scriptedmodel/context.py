"""What the scripted model enforces of the real API's context handling, pure: the prompt as
blocks (tools, system, messages, in the API's order), what a compaction block hides, the
context window, and a prompt cache that serves only prefixes actually sent before.

Token counts are estimates (a block's JSON length / 4): the scripted model cannot tokenize as
the real model does, but it counts the same thing the same way on every request, so the
harness's decisions (and the benchmarks' cache shares) are exercised against consistent figures.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cadre.api.types import Obj

DEFAULT_WINDOW = 200_000
WINDOWS = {
    "claude-opus-4-6": 200_000,
    "claude-sonnet-4-6": 200_000,
    "claude-opus-4": 200_000,
    "claude-sonnet-4": 200_000,
    "claude-haiku-4": 200_000,
}
"""Context windows by model name prefix (longest prefix wins), as the API documents them."""
COMPACTION_MODELS = ("claude-sonnet-4-6", "claude-opus-4-6")
"""Models that accept the ``compact_20260112`` edit."""
COMPACT_BETA = "compact-2026-01-12"
CONTEXT_MANAGEMENT_BETA = "context-management-2025-06-27"
DEFAULT_COMPACTION_TRIGGER = 150_000
CACHE_LOOKBACK_BLOCKS = 20
"""The API looks for an earlier cache hit this many blocks before each breakpoint."""
CACHE_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


def tokens(value: Any) -> int:
    """The scripted model's token estimate of a JSON value (at least 1)."""
    return max(1, len(json.dumps(value, separators=(",", ":"), sort_keys=True)) // 4)


def window_of(model: str, overrides: dict[str, int]) -> int:
    table = {**WINDOWS, **overrides}
    matches = [prefix for prefix in table if model.startswith(prefix)]
    return table[max(matches, key=len)] if matches else DEFAULT_WINDOW


def _blocks(content: Any) -> list[Obj]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def visible_messages(messages: list[Obj]) -> list[Obj]:
    """What the model reads of ``messages``: everything before the last compaction block (with
    a summary; a failed one, ``content: null``, is a no-op) is dropped, as the API does."""
    for index in range(len(messages) - 1, -1, -1):
        blocks = _blocks(messages[index].get("content"))
        for position in range(len(blocks) - 1, -1, -1):
            block = blocks[position]
            if block.get("type") == "compaction" and block.get("content"):
                first = {**messages[index], "content": blocks[position:]}
                return [first, *messages[index + 1 :]]
    return messages


@dataclass(frozen=True)
class Block:
    """One block of a prompt: its size, the digest of the prompt up to and including it, and
    its cache breakpoint (the TTL), if it carries one."""

    tokens: int
    digest: str
    breakpoint: float | None


def prompt_blocks(body: Obj, messages: list[Obj]) -> list[Block]:
    """The prompt in the API's order: tools, system, then each message's blocks. Digests chain
    (each covers everything before), so equal digests mean equal prefixes; ``cache_control``
    itself is not part of the content."""
    items: list[Obj] = [{"tool": tool} for tool in body.get("tools") or []]
    items += [{"system": block} for block in _blocks(body.get("system") or [])]
    for message in messages:
        items += [{message.get("role", ""): block} for block in _blocks(message.get("content"))]
    digest = hashlib.sha256(str(body.get("model", "")).encode()).hexdigest()
    blocks = []
    for item in items:
        ((kind, block),) = item.items()
        marker = block.get("cache_control")
        plain = {kind: {k: v for k, v in block.items() if k != "cache_control"}}
        text = json.dumps(plain, separators=(",", ":"), sort_keys=True)
        digest = hashlib.sha256((digest + text).encode()).hexdigest()
        ttl = None
        if isinstance(marker, dict):
            ttl = CACHE_TTL_SECONDS.get(str(marker.get("ttl") or "5m"), 300.0)
        blocks.append(Block(max(1, len(text) // 4), digest, ttl))
    return blocks


@dataclass(frozen=True)
class CacheUsage:
    input_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens


@dataclass
class PromptCache:
    """Prefixes written at cache breakpoints, by digest, with when they expire. A request reads
    the longest cached prefix found at or up to 20 blocks before one of its breakpoints, and
    writes every breakpoint's prefix (a hit refreshes its entry's lifetime)."""

    min_tokens: int = 0
    """Prefixes shorter than this are never cached (the API's minimum is 1024 tokens for most
    models; scenarios default to 0 because their prompts are tiny)."""
    entries: dict[str, float] = field(default_factory=dict)

    def use(self, blocks: list[Block], now: float) -> CacheUsage:
        sizes, total = [], 0
        for block in blocks:
            total += block.tokens
            sizes.append(total)
        breakpoints = [i for i, block in enumerate(blocks) if block.breakpoint is not None]
        read, hit = 0, -1
        for point in breakpoints:
            for index in range(point, max(point - CACHE_LOOKBACK_BLOCKS, 0) - 1, -1):
                if self.entries.get(blocks[index].digest, 0.0) > now:
                    if sizes[index] > read:
                        read, hit = sizes[index], index
                    break
        if hit >= 0:
            ttl = max(b.breakpoint or 0.0 for b in blocks)
            self.entries[blocks[hit].digest] = now + ttl
        written = 0
        for point in breakpoints:
            if sizes[point] >= self.min_tokens:
                ttl = blocks[point].breakpoint or 0.0
                self.entries[blocks[point].digest] = max(
                    self.entries.get(blocks[point].digest, 0.0), now + ttl
                )
                written = max(written, sizes[point])
        created = max(written - read, 0)
        return CacheUsage(total - read - created, read, created)


def prompt_too_long(total: int, window: int) -> str:
    """The API's message for a prompt over the window (a 400 invalid_request_error)."""
    return f"prompt is too long: {total} tokens > {window} maximum"


def clear_tool_uses(messages: list[Obj], keep: int, exclude: set[str]) -> tuple[list[Obj], int]:
    """The ``clear_tool_uses_20250919`` edit: all but the last ``keep`` tool results (of tools
    not excluded) replaced by a placeholder. Returns the messages and how many were cleared."""
    names = {
        block.get("id"): block.get("name")
        for message in messages
        for block in _blocks(message.get("content"))
        if block.get("type") == "tool_use"
    }
    positions = [
        (m, b)
        for m, message in enumerate(messages)
        for b, block in enumerate(_blocks(message.get("content")))
        if block.get("type") == "tool_result" and names.get(block.get("tool_use_id")) not in exclude
    ]
    clear = positions[: max(len(positions) - keep, 0)]
    if not clear:
        return messages, 0
    edited = [dict(message) for message in messages]
    for m, b in clear:
        blocks = list(_blocks(edited[m].get("content")))
        blocks[b] = {**blocks[b], "content": "[cleared to save context]"}
        edited[m]["content"] = blocks
    return edited, len(clear)
