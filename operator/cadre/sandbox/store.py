"""Tool results kept on the workspace volume, keyed by ``tool_use_id``.

This is what makes tool side effects happen once across harness crashes: the harness re-sends
an unanswered call with the same id, and the sandbox answers from here without running it
again, even after the sandbox itself restarted. Records are written whole (temporary file,
rename), so a crash leaves either the full result or none.

Durable against the death of the sandbox process (SIGKILL, OOM, a container restart): every
write reaches the kernel before the call runs or is answered, and the page cache outlives the
process. Not synced to disk on purpose: on node power loss the command's own effects on the
workspace are not synced either, so syncing only the records would promise a consistency it
cannot give, at the cost of most of a tool call's overhead (docs/sandbox.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cadre.sandbox.tools import ToolInputError

TOOL_USE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def input_digest(name: str, data: Any) -> str:
    """A fingerprint of a call, to catch an id reused for a different call."""
    canonical = json.dumps([name, data], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResultStore:
    """Stored results plus an append-only journal of every execution."""

    def __init__(self, folder: Path) -> None:
        self.results = folder / "results"
        self.journal = folder / "executions.jsonl"
        self.results.mkdir(parents=True, exist_ok=True)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._journal_lock = threading.Lock()
        # Ids that started at least once; one without a stored result was interrupted.
        raw = self.journal.read_bytes() if self.journal.exists() else b""
        self._started = {entry["tool_use_id"] for entry in parse_journal(raw)}
        self._journal_fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if raw and not raw.endswith(b"\n"):
            os.write(self._journal_fd, b"\n")  # end a line torn by a crash before appending

    def close(self) -> None:
        os.close(self._journal_fd)

    @staticmethod
    def check_id(tool_use_id: Any) -> str:
        if not isinstance(tool_use_id, str) or not TOOL_USE_ID.match(tool_use_id):
            raise ToolInputError(
                "tool_use_id: required, 1-128 characters of letters, digits, '_' or '-'"
            )
        return tool_use_id

    @contextmanager
    def exclusive(self, tool_use_id: str) -> Iterator[None]:
        """Hold while handling one id, so a duplicate request waits for the first."""
        with self._guard:
            lock = self._locks.setdefault(tool_use_id, threading.Lock())
        with lock:
            yield

    def get(self, tool_use_id: str) -> dict[str, Any] | None:
        if tool_use_id not in self._started:
            return None  # only a call that started can have a result
        path = self.results / f"{tool_use_id}.json"
        try:
            record: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return record

    def begin(self, tool_use_id: str, name: str, digest: str) -> bool:
        """Journal that a call starts (before it runs); True when an earlier attempt started
        and never stored a result, that is, was interrupted mid-run."""
        interrupted = tool_use_id in self._started
        entry = {
            "tool_use_id": tool_use_id,
            "name": name,
            "digest": digest,
            "time": time.time(),
            "rerun": interrupted,
        }
        line = (json.dumps(entry) + "\n").encode()
        with self._journal_lock:
            # One O_APPEND write of a whole line, in the kernel before the call runs.
            os.write(self._journal_fd, line)
            self._started.add(tool_use_id)
        return interrupted

    def finish(self, tool_use_id: str, record: dict[str, Any]) -> None:
        """Store a result whole before it is answered."""
        # Whole or not at all: a temporary file then a rename. The name needs no randomness:
        # this id's lock is held.
        target = self.results / f"{tool_use_id}.json"
        temporary = target.with_name(f".{target.name}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "wb") as handle:  # writes it all, however large
            handle.write(json.dumps(record).encode())
        os.replace(temporary, target)

    def executions(self) -> list[dict[str, Any]]:
        """Every execution ever started, oldest first (the sandbox's own record)."""
        return read_journal(self.journal)


def parse_journal(raw: bytes) -> list[dict[str, Any]]:
    """The journal's entries; a line torn by a crash is skipped, since that call never ran."""
    entries = []
    for line in raw.splitlines():
        try:
            entries.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
    return entries


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The entries of a journal file (none when it does not exist yet)."""
    return parse_journal(path.read_bytes()) if path.exists() else []
