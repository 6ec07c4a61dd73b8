"""``cadre logs`` says where a session log is damaged instead of skipping lines in silence:
the harness's event server, on a real socket, answers a ``log.damaged`` notice naming the line
in the place of a line that is not an event, and ``cadre logs`` prints it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cadre.api.names import bind_host
from cadre.cli.eventtext import describe
from cadre.harness.eventserver import DAMAGED, EventServer


def _event(seq: int) -> bytes:
    return json.dumps({"seq": seq, "type": "agent.message", "time": 0, "content": "hi"}).encode()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    log = tmp_path / "s.jsonl"
    server = EventServer(lambda task: log if task == "t" else None, lambda task: False)
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1/tasks/t/events", log
    finally:
        await runner.cleanup()


async def _read(url: str, after: int = 0) -> list[dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url, params={"after": after}) as r:
        assert r.status == 200
        return [json.loads(line) for line in (await r.text()).splitlines()]


async def test_a_damaged_line_is_named_not_skipped(served: tuple[str, Path]) -> None:
    url, log = served
    log.write_bytes(
        _event(1) + b"\n" + b'{"seq": 2, "type": "agent.mess\xff\n' + b"[1, 2]\n" + _event(2)
        + b"\n" + b'{"seq": 3, "ty'  # a torn tail: being written, not damage
    )  # fmt: skip
    events = await _read(url)
    assert [(e.get("seq"), e["type"], e.get("line")) for e in events] == [
        (1, "agent.message", None), (None, DAMAGED, 2), (None, DAMAGED, 3),
        (2, "agent.message", None),
    ]  # fmt: skip
    assert "line 2 of the session log is damaged: not JSON" in str(events[1]["message"])
    assert "line 3 of the session log is damaged: not an event" in str(events[2]["message"])
    # From a seq on: the damage after it is still said; before it, not again.
    assert [e.get("line") for e in await _read(url, after=1)] == [2, 3, None]
    assert await _read(url, after=2) == []
    shown = describe(events[1])
    assert shown is not None
    assert "DAMAGED LOG: line 2 of the session log is damaged" in shown


def test_the_events_server_listens_on_the_pods_address_or_loopback() -> None:
    assert bind_host("10.1.2.3") == "10.1.2.3"
    assert bind_host(None) == "127.0.0.1"  # outside a pod: never every interface
    assert bind_host("") == "127.0.0.1"
