"""Tool results kept on the workspace volume, keyed by ``tool_use_id``.

This is what makes tool side effects happen once across harness crashes: the harness re-sends
an unanswered call with the same id, and the sandbox answers from here without running it
again, even after the sandbox itself restarted.

Two append-only files, each line written whole with one ``write``: the journal
(``executions.jsonl``: a call starts) and the results (``results.jsonl``: a call ended, with
its whole record). A crash leaves either a full line or a torn last line, which is skipped on
the next start, so there is never half a record. Appending one line costs a few microseconds;
a file per result (temporary file, then rename) cost 0.4 ms, a fifth of a ``bash true`` call.

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

from cadre.sandbox.protocol import ToolInputError

TOOL_USE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def input_digest(name: str, data: Any) -> str:
    """A fingerprint of a call, to catch an id reused for a different call."""
    canonical = json.dumps([name, data], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResultStore:
    """Stored results plus an append-only journal of every execution."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.journal = folder / "executions.jsonl"
        self.results = folder / "results.jsonl"
        self._legacy = folder / "results"
        """One file per result: where sandboxes before the results log stored them (read only,
        so a session resumed by an upgraded sandbox still finds its earlier results)."""
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._append_lock = threading.Lock()
        # Ids that started at least once; one without a stored result was interrupted.
        self._started = {entry["tool_use_id"] for entry in read_journal(self.journal)}
        self._journal_fd = _open_for_append(self.journal)
        # Where each stored result's line is: (offset, length) in the results log.
        self._index: dict[str, tuple[int, int]] = {}
        raw = self.results.read_bytes() if self.results.exists() else b""
        offset = 0
        for line in raw.splitlines(keepends=True):
            record = _parse_line(line)
            if record is not None and isinstance(record.get("tool_use_id"), str):
                self._index[record["tool_use_id"]] = (offset, len(line))
            offset += len(line)
        self._results_fd = _open_for_append(self.results)
        self._results_size = os.fstat(self._results_fd).st_size

    def close(self) -> None:
        os.close(self._journal_fd)
        os.close(self._results_fd)

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
        where = self._index.get(tool_use_id)
        if where is not None:
            record = _parse_line(os.pread(self._results_fd, where[1], where[0]))
            assert record is not None, "an indexed line is whole"
            return record
        try:
            legacy: dict[str, Any] = json.loads((self._legacy / f"{tool_use_id}.json").read_text())
        except FileNotFoundError:
            return None
        return legacy

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
        with self._append_lock:
            _write_line(self._journal_fd, entry)
            self._started.add(tool_use_id)
        return interrupted

    def finish(self, tool_use_id: str, record: dict[str, Any]) -> None:
        """Store a result whole before it is answered."""
        with self._append_lock:
            length = _write_line(self._results_fd, record)
            self._index[tool_use_id] = (self._results_size, length)
            self._results_size += length

    def executions(self) -> list[dict[str, Any]]:
        """Every execution ever started, oldest first (the sandbox's own record)."""
        return read_journal(self.journal)


def _open_for_append(path: Path) -> int:
    """Writes go to the end (O_APPEND); reads at an offset (pread) use the same descriptor."""
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        os.write(fd, b"\n")  # end a line torn by a crash before appending
    return fd


def _write_line(fd: int, entry: dict[str, Any]) -> int:
    """Append one whole line; its length in bytes. One write for any size the kernel takes
    at once (a regular file takes it all unless the disk is full)."""
    data = (json.dumps(entry) + "\n").encode()
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


def _parse_line(line: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # torn by a crash: that call never finished
    return value if isinstance(value, dict) else None


def parse_journal(raw: bytes) -> list[dict[str, Any]]:
    """The journal's entries; a line torn by a crash is skipped, since that call never ran."""
    return [entry for entry in map(_parse_line, raw.splitlines()) if entry is not None]


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The entries of a journal file (none when it does not exist yet)."""
    return parse_journal(path.read_bytes()) if path.exists() else []
