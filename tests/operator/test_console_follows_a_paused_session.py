"""A console transcript goes on across a session's pause: the lead delegates and waits (its
harness stops following a paused session), then takes up the delivery and ends; one stream,
read as a browser's EventSource reads it, shows the lines from before and after the pause, each
once and in order, and then says the session is over."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import requests
from cadre.cli.console.run import start_in_thread
from cadre.cli.console.server import ConsoleSettings

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Served
from tests.operator.conftest import CADRE, agent_ready, create_agent, create_task
from tests.operator.test_traces_in_the_local_cluster import SCENARIO, TEAM


def _read_stream(url: str) -> list[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream, until the server ends it."""
    found, event, data = [], "message", []
    with requests.get(url, stream=True, timeout=120) as answer:
        for line in answer.iter_lines(decode_unicode=True):
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data.append(line.split(":", 1)[1].strip())
            elif not line and data:
                found.append((event, "\n".join(data)))
                event, data = "message", []
    return found


async def test_a_transcript_follows_a_session_through_its_pause(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory,
) -> None:  # fmt: skip
    http = cluster.http
    url, _ = await scripted(SCENARIO)
    create_agent(http, url, "lead", tools=[])
    create_agent(http, url, "engineer")
    assert http("POST", f"{CADRE}/teams", TEAM).status_code == 201
    for name in ("lead", "engineer"):
        await until(lambda name=name: agent_ready(http, name), within=60)
    create_task(http, "tree", "Get a.txt written.", agent=None, team="platform")
    # Read while the lead's session still runs: it will pause waiting for the engineer.
    await until(lambda: (http("GET", f"{CADRE}/tasks/tree").json().get("status") or {})
                .get("agent"), within=60)  # fmt: skip
    console = await asyncio.to_thread(start_in_thread, cluster.kubeconfig, ConsoleSettings())
    try:
        events = await asyncio.to_thread(
            _read_stream, console.url + "tasks/default/tree/transcript"
        )
    finally:
        await asyncio.to_thread(console.stop)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "end", events[-3:]
    lines: list[dict[str, Any]] = [json.loads(data) for kind, data in events if kind == "line"]
    text = "\n".join(line["text"] for line in lines)
    assert "Handing it over." in text  # before the pause
    assert "a.txt is written." in text  # after it
    assert "idle: WaitingForChildren" in text
    seqs = [line["seq"] for line in lines]
    assert seqs == sorted(set(seqs)), "each event once, in order"
