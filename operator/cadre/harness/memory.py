"""An Agent's memory: entries that persist across its Tasks, in a ConfigMap the operator
creates (``memory-AGENT``, key ``entries.yaml``), so people read and edit it with kubectl.

Pure functions rank, render and compact the entries; ``MemoryStore`` reads and writes the
ConfigMap with optimistic concurrency (a person editing it at the same time loses nothing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import kubernetes
import yaml

from cadre.api.names import MEMORY_KEY

KEY = MEMORY_KEY
MAX_ENTRY_CHARS = 1000
PROMPT_BUDGET_CHARS = 6000
"""The memory's share of the system prompt: the best-ranked entries that fit."""


class MemoryUnreadable(Exception):  # noqa: N818 - a state the harness reports
    """The ConfigMap's content is not a list of entries (someone edited it by hand)."""


@dataclass(frozen=True)
class Entry:
    text: str
    created: str
    """RFC 3339 time it was recorded."""
    uses: int = 0
    """Sessions whose system prompt carried it."""
    task: str = ""
    """The Task it came from."""


def parse(text: str, where: str = KEY) -> list[Entry]:
    """Entries from the ConfigMap's YAML; a clear error naming the entry or line otherwise."""
    try:
        data = yaml.safe_load(text) if text.strip() else []
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise MemoryUnreadable(f"{where}{line}: not valid YAML: {err}") from err
    if not isinstance(data, list):
        raise MemoryUnreadable(f"{where}: expected a list of entries, found {type(data).__name__}")
    entries = []
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise MemoryUnreadable(f"{where}: entry {index} needs a text field")
        try:
            entries.append(
                Entry(
                    text=item["text"],
                    created=str(item.get("created", "")),
                    uses=int(item.get("uses", 0)),
                    task=str(item.get("task", "")),
                )
            )
        except (TypeError, ValueError) as err:
            raise MemoryUnreadable(f"{where}: entry {index}: {err}") from err
    return entries


def dump(entries: list[Entry]) -> str:
    return yaml.safe_dump([asdict(e) for e in entries], sort_keys=False, allow_unicode=True)


def ranked(entries: list[Entry]) -> list[Entry]:
    """Most used first, newest first among equals."""
    return sorted(entries, key=lambda e: (e.uses, e.created), reverse=True)


def for_prompt(entries: list[Entry], budget: int = PROMPT_BUDGET_CHARS) -> list[Entry]:
    """The best-ranked entries that fit the prompt's budget."""
    chosen, used = [], 0
    for entry in ranked(entries):
        if used + len(entry.text) > budget:
            continue
        chosen.append(entry)
        used += len(entry.text)
    return chosen


def render(entries: list[Entry]) -> str:
    if not entries:
        return ""
    lines = "\n".join(f"- {e.text}" for e in entries)
    return f"What you remember from earlier Tasks (most useful first):\n{lines}"


def add(entries: list[Entry], text: str, task: str, now: str, max_entries: int) -> list[Entry]:
    """Record ``text`` (the same text again counts as a use), then compact to ``max_entries``
    by dropping the least used, oldest entries."""
    text = text.strip()[:MAX_ENTRY_CHARS]
    if not text:
        return entries
    same = [e for e in entries if e.text == text]
    if same:
        entries = [replace(e, uses=e.uses + 1) if e.text == text else e for e in entries]
    else:
        entries = [*entries, Entry(text=text, created=now, task=task)]
    return ranked(entries)[:max_entries]


def mark_used(entries: list[Entry], used: list[Entry]) -> list[Entry]:
    texts = {e.text for e in used}
    return [replace(e, uses=e.uses + 1) if e.text in texts else e for e in entries]


class MemoryStore:
    """The ConfigMap, read and replaced with its resourceVersion (retried on conflict)."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str, name: str) -> None:
        self.core = kubernetes.client.CoreV1Api(client)
        self.namespace = namespace
        self.name = name
        self._lock = asyncio.Lock()

    def _read(self) -> tuple[Any, list[Entry]]:
        found = self.core.read_namespaced_config_map(self.name, self.namespace)
        where = f"ConfigMap {self.namespace}/{self.name} key {KEY}"
        return found, parse((found.data or {}).get(KEY, ""), where)

    async def load(self) -> list[Entry]:
        """The entries; none when the ConfigMap does not exist (yet)."""
        try:
            _, entries = await asyncio.to_thread(self._read)
        except kubernetes.client.ApiException as err:
            if err.status == 404:
                return []
            raise
        return entries

    async def update(self, change: Callable[[list[Entry]], list[Entry]]) -> list[Entry]:
        async with self._lock:
            for _ in range(5):
                found, entries = await asyncio.to_thread(self._read)
                new = change(entries)
                found.data = {**(found.data or {}), KEY: dump(new)}
                try:
                    await asyncio.to_thread(
                        self.core.replace_namespaced_config_map, self.name, self.namespace, found
                    )
                except kubernetes.client.ApiException as err:
                    if err.status == 409:
                        continue  # edited meanwhile: apply the change to what is there now
                    raise
                return new
        raise MemoryUnreadable(f"ConfigMap {self.namespace}/{self.name} kept changing; not saved")
