"""``cadre harness --agent NAME``: one long-running brain per Agent.

It reads its Agent, watches the Tasks assigned to it (``spec.assignee.agent``, or
``status.agent`` once the operator resolved a Team to its lead), and runs each unfinished one
as a session, at most ``maxConcurrentTasks`` at once, resuming from the session log when one
exists. It reports progress in the Task's status, asks for a sandbox only when the first tool
call needs one, and stops a session promptly when its Task is cancelled. It needs only: get its
Agent, list/watch Tasks, and patch ``tasks/status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import kubernetes
from aiohttp import web

from cadre.api.agent import AgentSpec, LessonSource
from cadre.api.conditions import merge_condition
from cadre.api.egress import PROXY_PORT
from cadre.api.events import build_event
from cadre.api.limits import Limits
from cadre.api.names import TEAM_LABEL, harness_pod_name, memory_name
from cadre.api.task import FINAL_PHASES, INFRASTRUCTURE_FAILURES, MAX_DELIVERY_BYTES
from cadre.api.team import TeamSpec
from cadre.api.types import Obj, session_of
from cadre.harness.cluster_sandbox import ClusterSandbox, TaskCopies
from cadre.harness.context import plan_for
from cadre.harness.egress import EVENT as EGRESS_EVENT
from cadre.harness.egress import REFUSED_REASON as EGRESS_REFUSED
from cadre.harness.egress import EgressSettings, build_proxy, sandbox_environment
from cadre.harness.egress_proxy import EgressProxy, EgressRecord
from cadre.harness.eventserver import EventServer
from cadre.harness.logs import TRANSCRIPT
from cadre.harness.mcp_tools import McpTools
from cadre.harness.memory import MemoryStore, MemoryUnreadable, add, for_prompt, mark_used, render
from cadre.harness.metrics import HarnessMetrics, SessionLabels
from cadre.harness.permissions import Governance, answer_in
from cadre.harness.pricing import Prices, prices_for
from cadre.harness.replay import AWAITING_APPROVAL, AWAITING_REVIEW, WAITING, State
from cadre.harness.sandbox_client import SandboxClient, SandboxUnavailable
from cadre.harness.session import Session, SessionConfig, ToolSets
from cadre.harness.sessionlog import SessionLog, SessionLogError
from cadre.harness.task_status import (
    assigned_to,
    build_final_status,
    build_usage_status,
    delegated_cost,
    delivered,
    effective_limits,
    limits_status,
    now_stamp,
    verdict_of,
    version_of,
)
from cadre.harness.taskapi import TaskApi
from cadre.harness.team_tools import TeamTools, team_context
from cadre.harness.tokens import load_or_create_key, session_token
from cadre.harness.tracing import Tracing

log = logging.getLogger(__name__)
COMPONENT = "cadre-harness"
"""How the harness signs the Kubernetes Events it writes."""
REPORT_SECONDS = 5.0


@dataclass
class HarnessProcess:
    agent: str
    api: TaskApi
    state_dir: Path
    api_key: str
    sandbox_wait_seconds: float = 300.0
    base_url: str | None = None
    """The model endpoint the operator approved (None: the Anthropic API). Never the Agent's
    ``baseURL`` as read now: it may have been changed to an endpoint the operator refused."""
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    """Tasks whose session was stopped because the Task was cancelled (not a shutdown)."""
    known: dict[str, Obj] = field(default_factory=dict)
    """This Agent's Tasks as last seen (a parent woken by its child's change is found here)."""
    events_address: tuple[str, int] | None = None
    """Where to serve the sessions' events for ``cadre logs`` (None: not served)."""
    failures: dict[str, int] = field(default_factory=dict)
    """Failed sessions in a row, by Task: how long the next try waits."""
    ended: set[str] = field(default_factory=set)
    """Uids of Tasks whose final status this harness wrote: a copy of one seen before that
    write arrived (the watch lags) is not taken up again."""
    copies: TaskCopies = field(default_factory=TaskCopies)
    """Every Task the watch delivered, newest copy (sessions wait on their sandbox here)."""
    wakes: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    """Per Task waiting on a human for a tool call: the wake-up at its deadline."""
    _governed: tuple[float, Governance] | None = None
    metrics: HarnessMetrics = field(default_factory=HarnessMetrics)
    """Live metrics, counted from what sessions write (``/metrics`` on the events port)."""
    mcp: McpTools = field(default_factory=lambda: McpTools([]))
    """The Agent's MCP servers' tools (their connections are shared by every session)."""
    tracing: Tracing | None = None
    """OpenTelemetry traces of the sessions (None: not configured)."""
    egress: EgressSettings | None = None
    """The egress proxy's settings when the Agent's sandboxes use ``Hosts`` egress."""
    sandbox_environment: dict[str, str] = field(default_factory=dict)
    """Set for every bash call's commands (the egress proxy's address)."""
    open_logs: dict[str, SessionLog] = field(default_factory=dict)
    """Session logs open now, by Task (where a sandbox's connections are written)."""
    background: set[asyncio.Task[None]] = field(default_factory=set)
    """Best-effort writes in flight (Events)."""

    async def run(self, stop: asyncio.Event) -> None:
        agent = await self.api.agent(self.agent)
        spec = AgentSpec.model_validate(agent["spec"])
        self.spec = spec
        self.prices: Prices = prices_for(spec.model, spec.pricing)
        self.key = load_or_create_key(self.state_dir / "token.key")
        self.slots = asyncio.Semaphore(spec.max_concurrent_tasks)
        self.client = anthropic.AsyncAnthropic(api_key=self.api_key, base_url=self.base_url)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()
        halt = threading.Event()

        def emit(kind: str, obj: Obj) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(events.put_nowait, (kind, obj))

        failed: asyncio.Future[None] = loop.create_future()

        def watch() -> None:
            try:
                self.api.watch(emit, halt)
            except Exception as err:  # surfaced on the loop: the harness cannot work blind
                if not halt.is_set() and not loop.is_closed():
                    loop.call_soon_threadsafe(failed.set_exception, err)

        # A daemon thread, not the executor: a watch blocked in a read must not hold shutdown.
        threading.Thread(target=watch, name="task-watch", daemon=True).start()
        runner = await self._serve_events()
        proxy = await self._start_egress_proxy()
        log.info("harness for agent %s: watching Tasks in %s", self.agent, self.api.namespace)
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(events.get())
                stopper = asyncio.ensure_future(stop.wait())
                waiting: set[asyncio.Future[Any]] = {getter, stopper, failed}
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if failed in done:
                    getter.cancel()
                    failed.result()  # re-raise what stopped the watch
                if getter not in done:
                    getter.cancel()
                    continue
                kind, obj = getter.result()
                if kind == "LIST":
                    # Unfinished sessions first: they hold work in progress (and a sandbox).
                    for task in obj["items"]:
                        self.copies.publish(task)
                    for task in sorted(obj["items"], key=lambda t: not self._log_path(t).exists()):
                        self._on_task("ADDED", task)
                    continue
                if kind == "DELETED":
                    self.copies.forget(obj["metadata"]["name"])
                else:
                    self.copies.publish(obj)
                self._on_task(kind, obj)
        finally:
            halt.set()
            for task in self.running.values():
                task.cancel()
            await asyncio.gather(*self.running.values(), return_exceptions=True)
            await self.mcp.close()
            await self.client.close()
            if self.tracing is not None:
                await asyncio.to_thread(self.tracing.shutdown)  # what is queued is sent
            if runner is not None:
                await runner.cleanup()
            if proxy is not None:
                await proxy.close()

    async def _serve_events(self) -> web.AppRunner | None:
        if self.events_address is None:
            return None

        def log_of(name: str) -> Path | None:
            task = self.known.get(name)
            return self._log_path(task) if task is not None else None

        def active(name: str) -> bool:
            task = self.known.get(name)
            phase = ((task or {}).get("status") or {}).get("phase")
            return name in self.running or (task is not None and phase not in FINAL_PHASES)

        server = EventServer(log_of, active, self.metrics.registry)
        runner = web.AppRunner(server.app(), access_log=None)
        await runner.setup()
        host, port = self.events_address
        await web.TCPSite(runner, host, port).start()
        log.info("harness for agent %s: events on %s:%s", self.agent, host, port)
        return runner

    async def _start_egress_proxy(self) -> EgressProxy | None:
        """The sandboxes' only way out in ``Hosts`` mode, on this pod's address."""
        if self.egress is None:
            return None
        host = self.events_address[0] if self.events_address else "127.0.0.1"
        proxy = build_proxy(self.egress, self._on_egress)
        port = await proxy.start(host, PROXY_PORT)
        self.sandbox_environment = sandbox_environment(host, port)
        log.info("harness for agent %s: egress proxy on %s:%s", self.agent, host, port)
        return proxy

    def _on_egress(self, record: EgressRecord) -> None:
        """Account a sandbox's connection: metrics, its Task's session log, and for a refusal
        a Kubernetes Event on that Task (``kubectl describe task`` shows what was refused)."""
        namespace = self.api.namespace
        self.metrics.egress.labels(namespace, self.agent, record.decision,
                                   str(record.credential).lower()).inc()  # fmt: skip
        self.metrics.egress_bytes.labels(namespace, self.agent, "out").inc(record.bytes_out)
        self.metrics.egress_bytes.labels(namespace, self.agent, "in").inc(record.bytes_in)
        task = self._session_of_sandbox(record.client)
        if task is None:
            log.info("egress from %s (no open session): %s", record.client, record.event())
            return
        self.open_logs[task["metadata"]["name"]].append(EGRESS_EVENT, **record.event())
        if record.decision == "refused":
            message = f"egress to {record.host}:{record.port} refused: {record.reason}"
            event = build_event(task, "Warning", EGRESS_REFUSED, message, datetime.now(UTC),
                                COMPONENT, harness_pod_name(self.agent))  # fmt: skip
            self._keep(asyncio.get_running_loop().create_task(self.api.record_event(event)))

    def _session_of_sandbox(self, address: str) -> Obj | None:
        """The Task with an open session whose sandbox is at ``address`` (its pod's IP)."""
        for name, task in self.known.items():
            at = str(session_of(task.get("status")).get("sandboxAddress") or "")
            if at.rsplit(":", 1)[0] == address and name in self.open_logs:
                return task
        return None

    def _keep(self, task: asyncio.Task[None]) -> None:
        """A fire-and-forget task kept referenced until it ends (the loop holds only weakly)."""
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _log_path(self, task: Obj) -> Path:
        meta = task["metadata"]
        return (
            self.state_dir / "sessions" / self.api.namespace / f"{meta['name']}-{meta['uid']}.jsonl"
        )

    def _on_task(self, kind: str, task: Obj) -> None:
        name = task["metadata"]["name"]
        if kind == "DELETED":
            self.known.pop(name, None)
            self.ended.discard(task["metadata"].get("uid", ""))
            return
        if not assigned_to(task, self.agent):
            # A delegated Task moved: its parent, if it is ours and waits, may have news.
            parent = self.known.get((task["spec"].get("parentRef") or {}).get("name", ""))
            if parent is not None and (parent.get("status") or {}).get("phase") == "Waiting":
                self._start(parent)
            return
        self.known[name] = task
        phase = (task.get("status") or {}).get("phase")
        running = self.running.get(name)
        if task["spec"].get("cancel") and running is not None:
            # Once: a second cancel() (any later event of the Task: kopf's annotations, a
            # usage report) would interrupt the session writing its Cancelled status.
            if name not in self.cancelled:
                self.cancelled.add(name)
                running.cancel()
            return
        if phase in FINAL_PHASES or task["metadata"].get("uid") in self.ended:
            return
        if phase == "InReview" and verdict_of(task) is None and not task["spec"].get("cancel"):
            return  # nothing to act on until a verdict comes
        self._start(task)

    def _start(self, task: Obj) -> None:
        name = task["metadata"]["name"]
        if name not in self.running:
            self.running[name] = asyncio.get_running_loop().create_task(self._work(task))

    async def _work(self, task: Obj) -> None:
        name = task["metadata"]["name"]
        acted = failed = False
        try:
            queued = self.slots.locked()
            if queued:  # every slot busy: say so on the Task while it waits (issue 7)
                await self._set_queued(name, True)
            async with self.slots:
                if queued:
                    await self._set_queued(name, False)
                acted = await self._session(task)
        except Exception:
            log.exception("session of %s failed", name)
            failed = True
        finally:
            self.running.pop(name, None)
            self.cancelled.discard(name)  # a later Task of the same name starts afresh
        if failed:
            self._retry_later(name)
            return
        self.failures.pop(name, None)
        latest = self.known.get(name)
        if latest is not None and (acted or version_of(latest) != version_of(task)):
            # What arrived while the session was busy (a verdict, a child's news) is looked at
            # once more now that it is not: events seen while running were not acted on. That
            # holds for a session that only looked and found nothing new, too: a verdict that
            # came during the look (reading the Team and Agents can take a while) would
            # otherwise never be seen. A look at the very version it was started for ends here.
            self._on_task("MODIFIED", latest)

    async def _governance(self) -> Governance:
        """The Policies selecting this Agent, read at most every 5 s (each tool call asks)."""
        loop = asyncio.get_running_loop()
        if self._governed is not None and loop.time() - self._governed[0] < REPORT_SECONDS:
            return self._governed[1]
        agent = await self.api.agent(self.agent)
        labels = agent["metadata"].get("labels") or {}
        governed = Governance.select(await self.api.policies(), labels)
        self._governed = (loop.time(), governed)
        return governed

    def _wake_at(self, name: str, deadline: float) -> None:
        """Look at a Task waiting on a human again at its call's deadline (the Policy's
        ``onTimeout`` answers then); an answer before it wakes the session by itself."""
        previous = self.wakes.pop(name, None)
        if previous is not None:
            previous.cancel()

        def wake() -> None:
            self.wakes.pop(name, None)
            latest = self.known.get(name)
            if latest is not None:
                self._on_task("MODIFIED", latest)

        delay = max(deadline - time.time(), 0.0) + 0.05
        self.wakes[name] = asyncio.get_running_loop().call_later(delay, wake)

    def _retry_later(self, name: str) -> None:
        """A session that failed (an API server down for longer than the client's retries,
        a sandbox gone) resumes from its log after a backoff (1 s, doubling, at most 60 s),
        as a controller requeues: no later event of its Task may ever come to restart it."""
        self.failures[name] = self.failures.get(name, 0) + 1
        delay = min(2.0 ** (self.failures[name] - 1), 60.0)

        def retry() -> None:
            latest = self.known.get(name)
            if latest is not None and name not in self.running:
                self._on_task("MODIFIED", latest)

        asyncio.get_running_loop().call_later(delay, retry)

    async def _session(self, task: Obj) -> bool:
        """Work (or cancel) one Task's session until it ends or pauses. False when it was only
        looked at: a paused session with nothing new to act on is left as it is."""
        meta = task["metadata"]
        path = self._log_path(task)
        resumed = path.exists()
        try:
            session_log = SessionLog.open(path)
        except SessionLogError as err:
            outcome = {
                "outcome": "Failed",
                "reason": "SessionLogDamaged",
                "message": str(err),
                "result": "",
            }
            await self._finish(meta["name"], outcome, meta.get("generation"), None)
            return True
        self.open_logs[meta["name"]] = session_log
        try:
            return await self._drive(task, session_log, resumed)
        finally:
            self.open_logs.pop(meta["name"], None)
            session_log.close()

    async def _context(self, task: Obj, session_log: SessionLog) -> tuple[str, TeamTools]:
        """The session's team and memory context (from its log once it exists: a resumed
        session sends the same prefix) and its harness-side tools."""
        team_name = _team_of(task)
        team_obj = await self.api.team(team_name) if team_name else None
        team = TeamSpec.model_validate(team_obj["spec"]) if team_obj else None
        member = next((m for m in team.members if m.agent == self.agent), None) if team else None
        memory = None
        if self.spec.memory.enabled:
            memory = MemoryStore(
                self.api.custom.api_client, self.api.namespace, memory_name(self.agent)
            )
        tools = TeamTools(
            self.api, task["metadata"]["name"], self.agent,
            delegation=bool(member and member.delegates_to), memory=memory,
            max_memory_entries=self.spec.memory.max_entries,
            review_of=task["spec"].get("reviewOf"),
        )  # fmt: skip
        if session_log.events:
            return str(session_log.events[0].get("context") or ""), tools
        parts = []
        if team is not None and team_name:
            roles = {}
            for m in team.members:
                found = await self.api.agent(m.agent) if m.agent != self.agent else None
                roles[m.agent] = (found or {}).get("spec", {}).get("role", self.spec.role)
            parts.append(team_context(team_name, team, roles, self.agent))
        if memory is not None:
            try:
                entries = await memory.load()
                shown = for_prompt(entries)
                if shown:
                    parts.append(render(shown))
                    await memory.update(lambda current: mark_used(current, shown))
            except (MemoryUnreadable, kubernetes.client.ApiException) as err:
                log.warning("[%s] memory not loaded: %s", task["metadata"]["name"], err)
        return "\n\n".join(parts), tools

    async def _drive(self, task: Obj, session_log: SessionLog, resumed: bool) -> bool:
        meta, spec = task["metadata"], task["spec"]
        name, uid = meta["name"], meta["uid"]
        prompt = spec["prompt"]
        if spec.get("acceptanceCriteria"):
            prompt += f"\n\nAcceptance criteria: {spec['acceptanceCriteria']}"
        if spec.get("deliverables"):
            wanted = ", ".join(spec["deliverables"])
            prompt += (
                f"\n\nFiles to deliver, from your workspace, with your result: {wanted} "
                "(text files, 64 KiB in all)."
            )
        context, team_tools = await self._context(task, session_log)
        labels = SessionLabels(self.api.namespace, _team_of(task) or "", self.agent,
                               self.spec.model)  # fmt: skip
        session_log.observers.append(self.metrics.observer(labels, self.prices, name))
        if self.tracing is not None:
            session_log.observers.append(self.tracing.observer(task, self.agent, self.spec.model))
        review = spec.get("review") or {}
        limits = Limits.model_validate(spec.get("limits") or {})
        config = SessionConfig(
            task=f"{self.api.namespace}/{name}",
            agent=self.agent,
            role=self.spec.role,
            prompt=prompt,
            model=self.spec.model,
            system_prompt=self.spec.system_prompt,
            tools=tuple(t.value for t in self.spec.tools),
            limits=effective_limits(self.spec.limits, limits),
            context=context,
            extra_tools=(*team_tools.definitions(), *await self.mcp.definitions()),
            review_required=bool(spec.get("parentRef") or review.get("humanApproval")),
            max_review_rounds=int(review.get("maxRounds") or 3),
            context_plan=plan_for(self.spec.model, self.spec.context),
        )
        sandbox = ClusterSandbox(
            self.api, name, session_token(self.key, uid), self.copies, self.sandbox_wait_seconds
        )
        tools = SandboxClient(sandbox, environment=self.sandbox_environment)
        # Delivered files go into the workspace of a session that has one to look at them in.
        team_tools.sandbox = tools if config.tools else None
        session = Session(
            config, session_log, self.client, tools, self.prices,
            TRANSCRIPT.info, harness_tools=ToolSets(team_tools, self.mcp),
            delegated_cost=lambda: delegated_cost(
                self.known.get(name) or task, self.copies.below(name)
            ),
            governance=self._governance,
            answer_of=lambda call_id: answer_in(self.known.get(name) or task, call_id),
        )  # fmt: skip
        try:
            state = session.start()
            if spec.get("cancel") and state.outcome is None:
                outcome = session.cancel("the Task was cancelled")
                await self._finish(name, outcome, meta.get("generation"), session.state)
                return True
            if state.idle == AWAITING_REVIEW:
                verdict = verdict_of(task)
                if (verdict is None or not session.apply_verdict(verdict)) and delivered(
                    task, state.deliveries
                ):
                    return False
                # Else a verdict to act on, or a delivery logged whose status was never
                # written (the harness died in between): write it now.
            elif state.idle == WAITING and not await team_tools.pending_news(state):
                return False
            elif state.idle == AWAITING_APPROVAL and not session.approval_ready(state):
                self._wake_at(name, session.deadline(state))
                return False
            # Woken from a pause, a session was not interrupted: only a crash counts as resume.
            interrupted = resumed and state.idle is None
            status = task.get("status") or {}
            session_status = status.get("session") or {}
            if session.state.outcome is None and session.state.idle != AWAITING_REVIEW:
                await self.api.patch_status(name, {
                    "phase": "Running", "agent": self.agent,
                    "startTime": status.get("startTime") or now_stamp(),
                    "limits": limits_status(self.spec.limits, limits),
                    "session": {
                        "attempts": int(session_status.get("attempts", 0)) + 1,
                        "resumes": int(session_status.get("resumes", 0)) + int(interrupted),
                        "lastActivityTime": now_stamp()},
                    "pendingToolCalls": None, "waitingFor": "",
                })  # fmt: skip
            reporter = asyncio.get_running_loop().create_task(self._report(name, session))
            try:
                outcome = await session.run()
            except asyncio.CancelledError:
                # A shutdown leaves the session as it is, to be resumed from its log; only a
                # cancelled Task ends it.
                if name in self.cancelled:
                    outcome = session.cancel("the Task was cancelled")
                    await self._finish(name, outcome, meta.get("generation"), session.state)
                raise
            finally:
                reporter.cancel()
            if outcome.get("reason") == AWAITING_APPROVAL:
                self._wake_at(name, session.deadline(session.state))
            delivery = await self._deliverables(
                name, spec, outcome, tools if config.tools else None
            )
        finally:
            await tools.close()
        # A session that has ended is concluded even if the Task is cancelled or the harness
        # stops meanwhile (a cancel that comes after the end changes nothing), and before its
        # log is closed.
        conclusion = asyncio.ensure_future(
            self._conclude(task, outcome, session, team_tools, delivery)
        )
        try:
            await asyncio.shield(conclusion)
        except asyncio.CancelledError:
            await conclusion
            raise
        return True

    async def _conclude(
        self, task: Obj, outcome: Obj, session: Session, team_tools: TeamTools,
        delivery: Obj | None,
    ) -> None:  # fmt: skip
        """The lesson, then the final status: the lesson's tokens count in the Task's usage,
        and a harness that dies before the status is written records it again (as a use)."""
        learned = outcome["outcome"] in ("Succeeded", "Failed") and (
            outcome["reason"] not in INFRASTRUCTURE_FAILURES
        )
        if learned and team_tools.memory is not None:
            await self._record_lesson(task, outcome, session, team_tools.memory)
        meta = task["metadata"]
        await self._finish(meta["name"], outcome, meta.get("generation"), session.state, delivery)

    async def _deliverables(
        self, name: str, spec: Obj, outcome: Obj, tools: SandboxClient | None
    ) -> Obj | None:
        """The files ``spec.deliverables`` names, read from the sandbox as the session delivers
        (or succeeds); what could not be read is said in ``filesOmitted``, never fatal."""
        patterns = spec.get("deliverables") or []
        # At each delivery, or at the end of a Task nobody reviews; an accepted delivery keeps
        # the files it came with.
        delivering = outcome["outcome"] == "InReview" or (
            outcome["outcome"] == "Succeeded" and outcome["reason"] == "Completed"
        )
        if not patterns or not delivering:
            return None
        if tools is None:  # no sandbox tools, so no workspace: starting a pod would find nothing
            why = f"agent {self.agent} has no sandbox tools, so no workspace files"
            return {"files": [], "omitted": [why]}
        try:
            return await tools.bundle(list(patterns), MAX_DELIVERY_BYTES)
        except SandboxUnavailable as err:
            log.warning("[%s] deliverables not read: %s", name, err)
            return {"files": [], "omitted": [f"the workspace could not be read: {err}"[:1024]]}

    async def _record_lesson(
        self, task: Obj, outcome: Obj, session: Session, memory: MemoryStore
    ) -> None:
        """The end-of-Task entry: the model's own lesson (``memory.lessons: Model``), else, or
        when it gave none, what the Task was and how it ended, in one line."""
        spec = task["spec"]
        lesson = await session.lesson() if self.spec.memory.lessons == LessonSource.MODEL else ""
        if not lesson:
            title = spec.get("title") or spec["prompt"].splitlines()[0][:80]
            result = " ".join((outcome.get("result") or "").split())[:300]
            lesson = f"Task '{title}' ended {outcome['outcome']} ({outcome['reason']}): {result}"
        name = task["metadata"]["name"]
        try:
            await memory.update(
                lambda entries: add(
                    entries, lesson, name, now_stamp(), self.spec.memory.max_entries
                )
            )
        except (MemoryUnreadable, kubernetes.client.ApiException) as err:
            log.warning("[%s] lesson not recorded: %s", name, err)

    async def _set_queued(self, name: str, queued: bool) -> None:
        """The ``Queued`` condition: True while every one of the Agent's slots is busy. Best
        effort: a failed write is logged, and never keeps a session from running."""
        try:
            await self._write_queued(name, queued)
        except Exception:
            log.warning("could not set Queued=%s on Task %s", queued, name, exc_info=True)

    async def _write_queued(self, name: str, queued: bool) -> None:
        # The operator writes the same conditions list (Accepted): read, change and write only
        # if nobody wrote in between, else read again; a blind write would drop its condition.
        for _ in range(5):
            task = await self.api.task(name)
            try:
                await self._write_queued_on(task, queued)
                return
            except kubernetes.client.ApiException as err:
                if err.status != 409:
                    raise
        raise RuntimeError(f"Task {name} kept changing while its Queued condition was written")

    async def _write_queued_on(self, task: Obj, queued: bool) -> None:
        name = task["metadata"]["name"]
        current = (task.get("status") or {}).get("conditions") or []
        limit = self.spec.max_concurrent_tasks
        message = (
            f"waiting for a free slot: agent {self.agent} works at most {limit} Tasks at once"
            if queued
            else "a slot came free; the session started"
        )
        reason = "NoFreeSlot" if queued else "SlotAssigned"
        conditions = merge_condition(current, "Queued", queued, reason, message,
                                     now=datetime.now(UTC))  # fmt: skip
        await self.api.patch_status(name, {"conditions": conditions}, version_of(task))

    async def _finish(
        self, name: str, outcome: Obj, generation: int | None, state: State | None,
        delivery: Obj | None = None,
    ) -> None:  # fmt: skip
        """The final status, keeping the conditions others set (Accepted)."""
        current = ((await self.api.task(name)).get("status") or {}).get("conditions") or []
        status = build_final_status(outcome, generation, current)
        if delivery is not None:
            result = status.setdefault("result", {"summary": "", "truncated": False})
            result["files"] = delivery["files"]
            result["filesOmitted"] = delivery["omitted"][:32]
        if state is not None:
            status.update(build_usage_status(state))
            if outcome["outcome"] == "InReview":
                status["review"] = {"deliveries": state.deliveries}
        if outcome.get("pending"):
            status["pendingToolCalls"] = outcome["pending"]
            tools = ", ".join(sorted({call["tool"] for call in outcome["pending"].values()}))
            status["waitingFor"] = f"approval of a {tools} call"
        await self.api.patch_status(name, status)
        if status["phase"] in FINAL_PHASES and name in self.known:
            self.ended.add(self.known[name]["metadata"]["uid"])

    async def _report(self, name: str, session: Session) -> None:
        """Usage and last activity in the Task's status, at most every REPORT_SECONDS: each
        report is an API write, and a thousand running sessions reporting every second would
        be a thousand writes a second (the final status carries the exact figures)."""
        reported = -1
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            if len(session.log.events) != reported:
                reported = len(session.log.events)
                status = build_usage_status(session.state)
                status["session"] = {"lastActivityTime": now_stamp()}
                with contextlib.suppress(kubernetes.client.ApiException):
                    await self.api.patch_status(name, status)


def _team_of(task: Obj) -> str | None:
    """The Task's Team. The label is there from creation on (a delegated Task can be taken
    before the operator has written status.team); a top-level Task names its Team in its
    spec."""
    team = (
        (task.get("status") or {}).get("team")
        or task["metadata"].get("labels", {}).get(TEAM_LABEL)
        or task["spec"]["assignee"].get("team")
    )
    return str(team) if team else None
