"""The session log's rules: seq without gaps, fsync'd appends, one writer, a torn tail cut,
damage anywhere else refused with its line number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cadre.harness.sessionlog import SessionLog, SessionLogBusy, SessionLogCorrupt, read


def _write_events(path: Path, count: int) -> bytes:
    log = SessionLog.open(path)
    for index in range(count):
        log.append("agent.message", index=index)
    log.close()
    return path.read_bytes()


def test_events_are_numbered_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    _write_events(path, 3)
    events = read(path)
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert all({"seq", "type", "time"} <= set(e) for e in events)
    reopened = SessionLog.open(path)
    assert reopened.append("user.message", content="x")["seq"] == 4
    reopened.close()


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    first = SessionLog.open(path)
    with pytest.raises(SessionLogBusy, match="another harness is writing this session"):
        SessionLog.open(path)
    first.close()
    SessionLog.open(path).close()  # released with the first writer


@pytest.mark.parametrize(
    "damage",
    [
        b'{"seq": 4, "type": "agent.mes',  # torn mid-line
        b"\x00" * 64,  # the filesystem grew the file, the data never landed
        b'{"seq": 4, "type": "x"\x00\x00\x00\x00',  # torn, then padding
    ],
)
def test_a_torn_tail_is_dropped_and_cut(tmp_path: Path, damage: bytes) -> None:
    path = tmp_path / "s.jsonl"
    intact = _write_events(path, 3)
    path.write_bytes(intact + damage)
    log = SessionLog.open(path)
    assert [e["seq"] for e in log.events] == [1, 2, 3]
    assert path.read_bytes() == intact  # cut, so the next append starts a clean line
    log.append("user.message", content="after")
    log.close()
    assert [e["seq"] for e in read(path)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("damage", "line", "why"),
    [
        (lambda lines: [lines[0], b"garbage", *lines[2:]], 2, "not a JSON event"),
        (lambda lines: [lines[0], lines[2], lines[1], *lines[3:]], 2, "seq 3, expected 2"),
        (lambda lines: [lines[0], b"\x00\x00", *lines[2:]], 2, "damaged line before the end"),
        (
            lambda lines: [lines[0], json.dumps({"seq": 2}).encode(), *lines[2:]],
            2,
            "event without a type",
        ),
    ],
)
def test_damage_before_the_end_is_refused_with_its_line(
    tmp_path: Path, damage, line: int, why: str
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s.jsonl"
    lines = _write_events(path, 4).split(b"\n")[:-1]
    path.write_bytes(b"\n".join(damage(lines)) + b"\n")
    before = path.read_bytes()
    with pytest.raises(SessionLogCorrupt, match=f"line {line}: {why}"):
        SessionLog.open(path)
    assert path.read_bytes() == before  # nothing stored is lost or rewritten


def test_events_written_together_survive_as_a_prefix(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    log = SessionLog.open(path)
    log.append_all([("span.model_request_end", {"usage": {}}), ("agent.message", {"content": []})])
    log.close()
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 5])  # the crash cut the second line
    reopened = SessionLog.open(path)
    assert [e["type"] for e in reopened.events] == ["span.model_request_end"]
    reopened.close()
