"""The harness serves its sessions' events over HTTP, for ``cadre logs``: a session's log
replayed from the start (or after a given ``seq``) and, with ``follow``, the events as they are
written, until the session is over. No gap and no duplicate: events go out in ``seq`` order and
each once. People reach it through the API server's pod proxy, so it works wherever kubectl
works and RBAC (``get`` on ``pods/proxy``) decides who may read.

``GET /v1/tasks/{task}/events?after=SEQ&follow=true`` answers JSON lines; 404 names the Task
when this harness has no session for it; 400 names a bad parameter.

Sandboxes cannot reach this port in a real cluster (their NetworkPolicy allows no egress to
pod addresses); the session log holds the conversation and tool results, never the API key.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from cadre.harness.sessionlog import Event

POLL_SECONDS = 0.2
_TRUE = ("1", "true", "yes")


def complete_events(raw: bytes, after: int) -> tuple[list[Event], int]:
    """Events with ``seq`` above ``after`` from the complete lines of ``raw`` (a torn last
    line is being written: left for later), and how many bytes those lines took (pure)."""
    end = raw.rfind(b"\n") + 1
    events = []
    for line in raw[:end].split(b"\n"):
        stripped = line.strip(b"\x00").strip()
        if not stripped:
            continue
        try:
            event = json.loads(stripped)
        except ValueError:
            continue  # the harness refuses a damaged log itself; readers skip the line
        if isinstance(event, dict) and int(event.get("seq", 0)) > after:
            events.append(event)
    return events, end


class EventServer:
    """``log_of(task)`` is the session log's path (None: no session here); ``active(task)`` is
    whether the session may still write (following stops once it may not and all is sent)."""

    def __init__(self, log_of: Callable[[str], Path | None], active: Callable[[str], bool]) -> None:
        self.log_of = log_of
        self.active = active

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/tasks/{task}/events", self._events)
        app.router.add_get("/healthz", self._health)
        return app

    async def _health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        task = request.match_info["task"]
        try:
            after = int(request.query.get("after", "0"))
        except ValueError:
            bad = request.query["after"]
            raise web.HTTPBadRequest(text=f"after: not a number: {bad!r}\n") from None
        if after < 0:
            raise web.HTTPBadRequest(text="after: must be 0 or more\n")
        follow = request.query.get("follow", "").lower() in _TRUE
        path = self.log_of(task)
        if path is None or not path.exists():
            raise web.HTTPNotFound(text=f"no session for Task {task!r} on this harness\n")
        response = web.StreamResponse(headers={"Content-Type": "application/jsonl"})
        await response.prepare(request)
        offset = 0
        while True:
            still_active = self.active(task)  # read before the file: no event is missed
            raw = await asyncio.to_thread(_read_from, path, offset)
            events, used = complete_events(raw, after)
            offset += used
            for event in events:
                await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
                after = int(event["seq"])
            if not follow or (not still_active and not events):
                break
            await asyncio.sleep(POLL_SECONDS)
        await response.write_eof()
        return response


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read()
