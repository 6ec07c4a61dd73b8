"""The console's HTTP server (aiohttp): pages rendered from the store, live updates as
server-sent events, transcripts relayed from the harnesses through the API server's pod proxy,
and Approve / Reject that write the same spec patch ``cadre approve`` writes.

Being a local server that acts with the user's credentials, it guards against the web: a
request must name one of the console's own hosts (so a DNS-rebinding page cannot read it), a
decision must carry the page's secret token and come from the console's own origin (so another
site cannot post one), and the pages run only the console's own script (Content-Security-Policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp_sse import sse_response

from cadre.api.names import HARNESS_EVENTS_PORT, harness_pod_name, memory_name
from cadre.api.task import FINAL_PHASES, parent_of
from cadre.api.types import Obj
from cadre.cli import approval
from cadre.cli.console import pages, views
from cadre.cli.console.kubeapi import KubeApi, KubeApiError
from cadre.cli.console.store import Store
from cadre.cli.eventtext import describe
from cadre.harness.memory import MemoryUnreadable, parse

CHANGE_BATCH_SECONDS = 0.1
"""After telling a page of a change, wait this long before the next: a burst of watch events
costs one redraw, not one each."""
KEEPALIVE_SECONDS = 15.0
SYNC_PATIENCE_SECONDS = 10.0
"""How long a transcript asked for just after the console started waits for its first lists."""
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' "
    "'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass
class ConsoleSettings:
    namespaces: tuple[str, ...] = ()
    """Only these namespaces (none: all, which needs the right to list them cluster-wide)."""
    can_decide: bool = True
    """Offer Approve / Reject (the chart's read-only console does not)."""
    allowed_hosts: frozenset[str] = frozenset()
    """``Host`` values served (host:port); empty: any (behind the chart's Service / Ingress)."""
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Console:
    def __init__(self, api: KubeApi, store: Store, settings: ConsoleSettings) -> None:
        self.api = api
        self.store = store
        self.settings = settings
        self._said: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.on_response_prepare.append(_security_headers)  # every answer, errors and streams
        routes = [
            web.get("/", self.organization),
            web.get("/tasks", self.tasks),
            web.get("/tasks/{namespace}/{name}", self.task),
            web.get("/tasks/{namespace}/{name}/transcript", self.transcript),
            web.get("/waiting", self.waiting),
            web.post("/decide", self.decide),
            web.get("/spend", self.spend),
            web.get("/agents/{namespace}/{name}", self.agent),
            web.get("/changes", self.changes),
            web.get("/healthz", self.health),
        ]
        app.add_routes(routes)
        static = Path(str(resources.files("cadre.cli.console") / "static"))
        app.router.add_static("/static", static, append_version=False)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        allowed = self.settings.allowed_hosts
        if allowed and request.host not in allowed and request.path != "/healthz":
            return web.Response(status=421, text=f"this console does not serve {request.host}\n")
        return await handler(request)

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(text="ok" if self.store.snapshot().synced else "listing")

    # -- pages -------------------------------------------------------------------------------

    def _render(self, request: web.Request, body: str, title: str, page: str,
                **context: Any) -> web.Response:  # fmt: skip
        snap = context.pop("snap", None) or self.store.snapshot()
        said = self._said.pop(request.query.get("said", ""), ("", ""))
        only = self.settings.namespaces
        text = pages.page(
            body, fragment=request.query.get("fragment") == "1", title=title, page=page,
            version=snap.version, problems=snap.problems, synced=snap.synced,
            scope=f"namespace {', '.join(only)}" if only else "all namespaces",
            notice=said[1] if said[0] == "notice" else "",
            error=said[1] if said[0] == "error" else "", **context,
        )  # fmt: skip
        return web.Response(text=text, content_type="text/html",
                            headers={"X-Console-Version": str(snap.version)})  # fmt: skip

    async def organization(self, request: web.Request) -> web.Response:
        snap = self.store.snapshot()
        org = views.organization(snap, datetime.now(UTC))
        return self._render(request, "org.html", "Organization", "org", snap=snap, org=org)

    async def tasks(self, request: web.Request) -> web.Response:
        snap = self.store.snapshot()
        found = views.trees(snap, datetime.now(UTC))
        return self._render(request, "tasks.html", "Task trees", "tasks", snap=snap, trees=found)

    async def task(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        snap = self.store.snapshot()
        task = views.find(snap.tasks, ns, name)
        status = (task or {}).get("status") or {}
        agent = views.agent_of(task) if task else ""
        taken = bool(status.get("agent"))
        return self._render(
            request, "task.html", f"Task {name}", "tasks", snap=snap, task=task,
            agent=agent, phase=status.get("phase") or "Pending", usage=status.get("usage") or {},
            cost=Decimal(str((status.get("usage") or {}).get("costUSD") or "0")),
            parent=parent_of(task) if task else None,
            summary=(status.get("result") or {}).get("summary") or "",
            after="transcript.html",
            stream=f"/tasks/{ns}/{name}/transcript" if taken else "",
        )  # fmt: skip

    async def waiting(self, request: web.Request) -> web.Response:
        snap = self.store.snapshot()
        return self._render(
            request, "waiting.html", "Waiting for you", "waiting", snap=snap,
            items=views.waiting(snap), can_decide=self.settings.can_decide,
            csrf=self.settings.csrf,
        )  # fmt: skip

    async def spend(self, request: web.Request) -> web.Response:
        snap = self.store.snapshot()
        try:
            days = min(max(int(request.query.get("days", "14")), 1), 90)
        except ValueError:
            raise web.HTTPBadRequest(text="days: not a number\n") from None
        tables = views.spend(snap, datetime.now(UTC), days)
        return self._render(request, "spend.html", "Spend", "spend", snap=snap, tables=tables,
                            days=days)  # fmt: skip

    async def agent(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        snap = self.store.snapshot()
        org = views.organization(snap, datetime.now(UTC))
        every = [*org.solo, *(m for t in org.teams for m in (t.lead, *t.members))]
        card = next((c for c in every if isinstance(c, views.AgentCard)
                     and (c.namespace, c.name) == (ns, name)), None)  # fmt: skip
        memory, memory_error = [], ""
        if card is not None:
            try:
                where = f"ConfigMap {ns}/{memory_name(name)}"
                found = await self.api.get(
                    f"/api/v1/namespaces/{ns}/configmaps/{memory_name(name)}"
                )
                memory = parse((found.get("data") or {}).get("entries.yaml", ""), where)
            except KubeApiError as err:
                if err.status != 404:
                    memory_error = f"cannot read the memory: {err.message}"
            except MemoryUnreadable as err:
                memory_error = str(err)
        return self._render(
            request, "agent.html", f"Agent {name}", "org", snap=snap, card=card, name=name,
            namespace=ns, memory=memory, memory_error=memory_error,
            tasks=views.agent_tasks(snap, ns, name),
        )  # fmt: skip

    # -- live --------------------------------------------------------------------------------

    async def changes(self, request: web.Request) -> web.StreamResponse:
        """``change`` events as the store moves past the version the page was drawn at."""
        try:
            version = int(request.query.get("version", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="version: not a number\n") from None
        async with sse_response(request) as sse:
            with contextlib.suppress(ConnectionResetError):  # the page went away
                while sse.is_connected() and not self.store.closed:
                    now = await self.store.changed_since(version, KEEPALIVE_SECONDS)
                    if now != version:
                        version = now
                        await sse.send(str(version), event="change")
                        await asyncio.sleep(CHANGE_BATCH_SECONDS)
        return sse

    async def transcript(self, request: web.Request) -> web.StreamResponse:
        """The session's events as lines: what is logged so far, then as it is written. The
        browser's reconnection sends ``Last-Event-ID`` (a ``seq``): it goes on from there."""
        ns, name = request.match_info["namespace"], request.match_info["name"]
        try:
            after = int(request.headers.get("Last-Event-ID") or 0)
        except ValueError:
            after = 0
        deadline = asyncio.get_running_loop().time() + SYNC_PATIENCE_SECONDS
        while not self.store.snapshot().synced and not self.store.closed:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            await self.store.changed_since(self.store.version, left)  # first lists arrive
        task = views.find(self.store.snapshot().tasks, ns, name)
        agent = ((task or {}).get("status") or {}).get("agent")
        async with sse_response(request) as sse:
            if not agent:
                await sse.send("No Agent has taken this Task: there is no session.",
                               event="problem")  # fmt: skip
                return sse
            pod = f"{harness_pod_name(agent)}:{HARNESS_EVENTS_PORT}"
            path = f"/api/v1/namespaces/{ns}/pods/{pod}/proxy/v1/tasks/{name}/events"
            try:
                async with contextlib.aclosing(self.api.lines(path, after=str(after))) as logged:
                    async for line in logged:
                        after = await _relay(sse, line, after)
                await sse.send("following", event="following")
                while True:
                    followed = self.api.lines(path, after=str(after), follow="true")
                    async with contextlib.aclosing(followed):  # the browser left: so does this
                        async for line in followed:
                            after = await _relay(sse, line, after)
                    # The harness stops following a session that pauses (delegated work, a
                    # review, a person's answer): wait for the Task to move, then go on.
                    if not await self._moves_on(ns, name):
                        break
                await sse.send("The session is over (its log is complete).", event="end")
            except KubeApiError as err:
                message = f"cannot read the session from pod {pod}: {err.message}"
                with contextlib.suppress(ConnectionResetError):
                    await sse.send(message, event="problem")
            except (ConnectionResetError, aiohttp.ClientError):
                # The page went away, or the harness did (restarted: its log remains); the
                # browser reconnects with Last-Event-ID and goes on from there.
                pass
        return sse

    async def _moves_on(self, namespace: str, name: str) -> bool:
        """False once the Task has ended (or is gone, or the console stops); True when it
        changes while paused, so its session may write again."""

        def seen() -> Obj | None:
            return views.find(self.store.snapshot().tasks, namespace, name)

        before = seen()
        while not self.store.closed:
            if before is None or (before.get("status") or {}).get("phase") in FINAL_PHASES:
                return False
            await self.store.changed_since(self.store.version, KEEPALIVE_SECONDS)
            now = seen()
            if now is None or now["metadata"].get("resourceVersion") != before["metadata"].get(
                "resourceVersion"
            ):
                return now is not None
        return False

    # -- decisions ---------------------------------------------------------------------------

    def _say(self, kind: str, text: str) -> str:
        token = secrets.token_urlsafe(8)
        self._said[token] = (kind, text)
        while len(self._said) > 100:
            self._said.popitem(last=False)
        return token

    async def decide(self, request: web.Request) -> web.Response:
        """Approve or reject a deliverable or a tool call: the spec patch ``cadre approve``
        and ``cadre reject`` write, with the console's credentials (the user's own locally)."""
        if not self.settings.can_decide:
            raise web.HTTPForbidden(text="this console is read-only\n")
        origin = request.headers.get("Origin")
        # The host, not the scheme: behind a TLS-terminating Ingress the console sees http.
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise web.HTTPForbidden(text=f"a decision from another site ({origin}) is refused\n")
        form = await request.post()
        if not hmac.compare_digest(str(form.get("csrf", "")), self.settings.csrf):
            raise web.HTTPForbidden(text="the form's token is missing or stale: reload the page\n")
        ns, name = str(form.get("namespace", "")), str(form.get("task", ""))
        call, decision = str(form.get("call", "")), str(form.get("decision", ""))
        feedback = str(form.get("feedback", "")).strip()
        if decision not in ("approve", "reject") or not ns or not name:
            raise web.HTTPBadRequest(text="decision must be approve or reject, for a Task\n")
        approved = decision == "approve"
        path = f"/apis/cadre.dev/v1alpha1/namespaces/{ns}/tasks/{name}"
        what = f"tool call {call} of Task {name}" if call else f"Task {name}"
        try:
            current = await self.api.get(path)
            patch = approval.verdict_patch(current, call or None, approved, feedback)
            await self.api.merge_patch(path, {"spec": patch})
        except (approval.NotAwaitingApprovalError, KubeApiError) as err:
            said = self._say("error", f"{what}: {getattr(err, 'message', None) or err}")
        else:
            said = self._say("notice", f"{'Approved' if approved else 'Rejected'} {what}.")
        raise web.HTTPSeeOther(f"/waiting?said={said}")


async def _security_headers(_: web.Request, response: web.StreamResponse) -> None:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)


async def _relay(sse: Any, line: bytes, after: int) -> int:
    """Send one session event as a transcript line; the ``seq`` reached."""
    event = json.loads(line)
    seq = event.get("seq")
    text = describe(event)
    if text is not None:
        data = json.dumps({"seq": seq, "type": event.get("type"), "text": text})
        await sse.send(data, event="line", id=str(seq) if isinstance(seq, int) else None)
    return seq if isinstance(seq, int) else after
