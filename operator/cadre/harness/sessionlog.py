"""The session log: one JSON object per line, the only record a session resumes from.

Rules (docs/harness.md): every event has ``seq`` (1, 2, 3, ... with no gap), ``type`` and
``time``; an event is written, flushed and fsync'd before anything acts on it; one writer per
log (an exclusive ``flock``: a second harness on the same log fails with a message saying so).
Reading back: a torn last line (the writer died mid-write, possibly leaving NUL padding) is
dropped and cut off; damage anywhere else is refused with its line number, because resuming from
a log with a hole would replay a different session.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Event = dict[str, Any]


class SessionLogError(Exception):
    """The log cannot be used: damaged, or held by another writer."""


class SessionLogCorrupt(SessionLogError):  # noqa: N818 - reads as what it reports
    def __init__(self, path: Path, line: int, why: str) -> None:
        super().__init__(f"{path}: line {line}: {why}")
        self.line = line


class SessionLogBusy(SessionLogError):  # noqa: N818
    pass


@dataclass(frozen=True)
class ReadResult:
    events: list[Event]
    valid_bytes: int
    """Length of the intact prefix; anything after it was a torn tail."""
    torn_tail: bool


def parse(raw: bytes, path: Path) -> ReadResult:
    """Events of a log's bytes. The last line may be torn (dropped); no other line may be."""
    events: list[Event] = []
    offset = 0
    lines = raw.split(b"\n")
    complete = lines[:-1]  # the piece after the last newline is a torn tail (or empty)
    tail = lines[-1]
    for number, line in enumerate(complete, start=1):
        stripped = line.strip(b"\x00")
        is_last = number == len(complete) and not tail.strip(b"\x00")
        try:
            event = json.loads(stripped) if stripped else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            event = None
        if not isinstance(event, dict) or b"\x00" in line:
            if is_last or not stripped:
                # NUL padding or a torn final line: the writer died here; nothing after it.
                if any(part.strip(b"\x00") for part in complete[number:]):
                    raise SessionLogCorrupt(path, number, "damaged line before the end of the log")
                return ReadResult(events, offset, True)
            raise SessionLogCorrupt(path, number, "not a JSON event")
        expected = len(events) + 1
        if event.get("seq") != expected:
            raise SessionLogCorrupt(path, number, f"seq {event.get('seq')!r}, expected {expected}")
        if not isinstance(event.get("type"), str):
            raise SessionLogCorrupt(path, number, "event without a type")
        events.append(event)
        offset += len(line) + 1
    return ReadResult(events, offset, bool(tail))


class SessionLog:
    """An open log: its events so far, and ``append`` for new ones (the only writer)."""

    def __init__(self, path: Path, events: list[Event], fd: int) -> None:
        self.path = path
        self.events = events
        self._fd = fd
        self.observers: list[Callable[[list[Event]], None]] = []
        """Told of each batch of events once it is on disk (the harness's metrics): only
        what is written now, never what was read back."""

    @classmethod
    def open(cls, path: Path) -> SessionLog:
        """Open (or create) a log for writing: take the lock, read it, cut a torn tail."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            os.close(fd)
            raise SessionLogBusy(
                f"{path}: another harness is writing this session; a session has one writer"
            ) from err
        try:
            raw = _read_fd(fd)
            result = parse(raw, path)
            if result.torn_tail:
                os.ftruncate(fd, result.valid_bytes)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, result.events, fd)

    @property
    def next_seq(self) -> int:
        return len(self.events) + 1

    def append(self, event_type: str, **payload: Any) -> Event:
        """Write one event and fsync it; only then may anything act on it."""
        return self.append_all([(event_type, payload)])[0]

    def append_all(self, items: list[tuple[str, dict[str, Any]]]) -> list[Event]:
        """Write several events in one write and one fsync (a crash keeps a prefix of them)."""
        now = time.time()
        events = [
            {"seq": self.next_seq + index, "type": kind, "time": now, **payload}
            for index, (kind, payload) in enumerate(items)
        ]
        data = b"".join((json.dumps(e, separators=(",", ":")) + "\n").encode() for e in events)
        written = 0
        while written < len(data):
            written += os.write(self._fd, data[written:])
        os.fsync(self._fd)
        self.events.extend(events)
        for observe in self.observers:
            observe(events)
        return events

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the lock
            self._fd = -1


def read(path: Path) -> list[Event]:
    """The events of a log, without taking it (``cadre logs``, tests)."""
    return parse(path.read_bytes(), path).events if path.exists() else []


def _read_fd(fd: int) -> bytes:
    chunks: list[bytes] = []
    offset = 0
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)
