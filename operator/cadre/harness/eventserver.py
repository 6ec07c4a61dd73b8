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
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from cadre.harness.sessionlog import Event

POLL_SECONDS = 0.2
_TRUE = ("1", "true", "yes")


DAMAGED = "log.damaged"
"""The type of the notice a reader gets in place of a line of the log that is not an event."""


@dataclass
class Cursor:
    """How far a reader has got: bytes read, lines read, the last event's ``seq`` sent."""

    after: int
    offset: int = 0
    line: int = 0
    last_seq: int = 0


def complete_events(raw: bytes, cursor: Cursor) -> list[Event]:
    """Events with ``seq`` above ``cursor.after`` from the complete lines of ``raw`` (read at
    ``cursor.offset``; a torn last line is being written: left for later), the cursor moved
    past them. A line that is not an event is not skipped in silence: a ``log.damaged``
    notice takes its place, naming its line number, so ``cadre logs`` says where the log is
    damaged (the harness itself refuses to resume such a log: SessionLogDamaged)."""
    end = raw.rfind(b"\n") + 1
    events: list[Event] = []
    for line in raw[:end].split(b"\n")[:-1]:
        cursor.line += 1
        stripped = line.strip(b"\x00").strip()
        if not stripped:
            continue
        try:
            event = json.loads(stripped)
        except ValueError as err:
            why = f"not JSON ({err})"
        else:
            if isinstance(event, dict) and isinstance(event.get("seq"), int):
                cursor.last_seq = event["seq"]
                if event["seq"] > cursor.after:
                    events.append(event)
                continue
            why = "not an event with a seq"
        if cursor.last_seq >= cursor.after:  # after what the reader asked for
            message = f"line {cursor.line} of the session log is damaged: {why}; skipped"
            events.append({"type": DAMAGED, "line": cursor.line, "message": message})
    cursor.offset += end
    return events


class EventServer:
    """``log_of(task)`` is the session log's path (None: no session here); ``active(task)`` is
    whether the session may still write (following stops once it may not and all is sent)."""

    def __init__(
        self,
        log_of: Callable[[str], Path | None],
        active: Callable[[str], bool],
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.log_of = log_of
        self.active = active
        self.registry = registry
        """The harness's metrics, served on ``/metrics`` (Prometheus text format)."""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/tasks/{task}/events", self._events)
        app.router.add_get("/healthz", self._health)
        if self.registry is not None:
            app.router.add_get("/metrics", self._metrics)
        return app

    async def _metrics(self, _: web.Request) -> web.Response:
        assert self.registry is not None
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

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
        cursor = Cursor(after)
        while True:
            still_active = self.active(task)  # read before the file: no event is missed
            raw = await asyncio.to_thread(_read_from, path, cursor.offset)
            events = complete_events(raw, cursor)
            for event in events:
                await response.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")
            if not follow or (not still_active and not events):
                break
            await asyncio.sleep(POLL_SECONDS)
        await response.write_eof()
        return response


def _read_from(path: Path, offset: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read()
