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
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import kubernetes

from cadre.api import GROUP, VERSION
from cadre.api.agent import AgentSpec
from cadre.api.conditions import merge_condition
from cadre.api.limits import Limits
from cadre.harness.pricing import Prices, prices_for
from cadre.harness.sandbox_client import SandboxClient, SandboxEndpoint, SandboxUnavailable
from cadre.harness.session import Session, SessionConfig, SessionLimits, State
from cadre.harness.sessionlog import SessionLog, SessionLogError
from cadre.harness.tokens import load_or_create_key, session_token, token_digest

log = logging.getLogger(__name__)
Obj = dict[str, Any]
FINAL_PHASES = ("Succeeded", "Failed", "Cancelled")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """A Go duration (``1h30m``, ``90s``) in seconds; the API's pattern guarantees the form."""
    return sum(float(value) * _UNITS[unit] for value, unit in _DURATION.findall(text))


DEFAULT_MAX_TURNS = 200
"""When neither the Task nor its Agent bounds a session at all: no runaway session by default."""


def effective_limits(agent: Limits, task: Limits) -> SessionLimits:
    """A Task's limits replace its Agent's, field by field. With no limit set anywhere, the
    session gets ``DEFAULT_MAX_TURNS``, so a model that never stops cannot spend forever."""

    def pick(name: str) -> Any:
        value = getattr(task, name)
        return value if value is not None else getattr(agent, name)

    timeout = pick("timeout")
    cost = pick("max_cost_usd")
    unbounded = all(
        pick(name) is None for name in ("max_turns", "max_tokens", "timeout", "max_cost_usd")
    )
    return SessionLimits(
        max_turns=DEFAULT_MAX_TURNS if unbounded else pick("max_turns"),
        max_tokens=pick("max_tokens"),
        timeout_seconds=parse_duration(timeout) if timeout else None,
        max_cost_usd=Decimal(cost) if cost is not None else None,
    )


def assigned_to(task: Obj, agent: str) -> bool:
    status_agent = (task.get("status") or {}).get("agent")
    if status_agent:
        return bool(status_agent == agent)
    return bool(task.get("spec", {}).get("assignee", {}).get("agent") == agent)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_usage_status(state: State) -> Obj:
    """The Task status fields a session's progress fills in (pure)."""
    return {
        "usage": {
            "turns": state.turns,
            "inputTokens": state.usage["input_tokens"],
            "outputTokens": state.usage["output_tokens"],
            "cacheReadInputTokens": state.usage["cache_read_input_tokens"],
            "cacheCreationInputTokens": state.usage["cache_creation_input_tokens"],
            "costUSD": f"{state.cost_usd.quantize(Decimal('0.000001')).normalize():f}",
        },
    }


def build_final_status(outcome: Obj, generation: int | None, conditions: list[Obj]) -> Obj:
    """Phase, result and the ``Succeeded`` condition of an ended session (pure); the other
    conditions are kept (a merge patch replaces the whole list)."""
    phase = outcome["outcome"]
    summary = outcome.get("result") or ""
    return {
        "phase": phase,
        "completionTime": _now(),
        "result": {"summary": summary[:4096], "truncated": len(summary) > 4096},
        "conditions": merge_condition(
            conditions,
            "Succeeded",
            phase == "Succeeded",
            outcome["reason"],
            outcome.get("message", "")[:1024],
            now=datetime.now(UTC),
            observed_generation=generation,
        ),
    }


class TaskApi:
    """The few calls the harness makes, on a thread (the kubernetes client blocks)."""

    def __init__(self, client: kubernetes.client.ApiClient, namespace: str) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.namespace = namespace

    def _get(self, plural: str, name: str) -> Obj:
        found: Obj = self.custom.get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, self.namespace, plural, name
        )
        return found

    async def agent(self, name: str) -> Obj:
        return await asyncio.to_thread(self._get, "agents", name)

    async def task(self, name: str) -> Obj:
        return await asyncio.to_thread(self._get, "tasks", name)

    async def patch_status(self, name: str, status: Obj) -> None:
        await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object_status,
            GROUP, VERSION, self.namespace, "tasks", name, {"status": status},
        )  # fmt: skip

    def watch(self, emit: Callable[[str, Obj], None], stop: threading.Event) -> None:
        """List then watch Tasks forever (relisting on 410). A list is emitted whole, as
        ``("LIST", {"items": [...]})``, so the harness can order what it takes up."""
        while not stop.is_set():
            listed: Obj = self.custom.list_namespaced_custom_object(  # type: ignore[assignment]
                GROUP, VERSION, self.namespace, "tasks"
            )
            emit("LIST", listed)
            version = listed["metadata"]["resourceVersion"]
            watcher = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in watcher.stream(  # type: ignore[no-untyped-call]
                    self.custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace,
                    "tasks", resource_version=version, timeout_seconds=30,
                ):  # fmt: skip
                    if stop.is_set():
                        return
                    emit(event["type"], event["object"])
            except kubernetes.client.ApiException as err:
                if err.status != 410:
                    raise
            finally:
                watcher.stop()  # type: ignore[no-untyped-call]


@dataclass
class ClusterSandbox:
    """The lazy sandbox: asked for through the Task's status at the first tool call, then
    waited for (the operator builds it and reports its address)."""

    api: TaskApi
    task: str
    token: str
    wait_seconds: float = 300.0
    _endpoint: SandboxEndpoint | None = None

    async def endpoint(self) -> SandboxEndpoint:
        if self._endpoint is not None:
            return self._endpoint
        session = {"sandboxRequested": True, "sandboxTokenSHA256": token_digest(self.token)}
        await self.api.patch_status(self.task, {"session": session})
        deadline = time.monotonic() + self.wait_seconds
        while time.monotonic() < deadline:
            status = (await self.api.task(self.task)).get("status") or {}
            current = status.get("session") or {}
            if current.get("sandboxReady") and current.get("sandboxAddress"):
                self._endpoint = SandboxEndpoint(f"http://{current['sandboxAddress']}", self.token)
                return self._endpoint
            await asyncio.sleep(0.2)
        raise SandboxUnavailable(f"no sandbox was ready within {self.wait_seconds:g}s")

    def forget(self) -> None:
        """After a failed call: read the address again (the pod may have been recreated)."""
        self._endpoint = None


@dataclass
class HarnessProcess:
    agent: str
    api: TaskApi
    state_dir: Path
    api_key: str
    sandbox_wait_seconds: float = 300.0
    running: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    """Tasks whose session was stopped because the Task was cancelled (not a shutdown)."""

    async def run(self, stop: asyncio.Event) -> None:
        agent = await self.api.agent(self.agent)
        spec = AgentSpec.model_validate(agent["spec"])
        self.spec = spec
        self.prices: Prices = prices_for(spec.model, spec.pricing)
        self.key = load_or_create_key(self.state_dir / "token.key")
        self.slots = asyncio.Semaphore(spec.max_concurrent_tasks)
        self.client = anthropic.AsyncAnthropic(api_key=self.api_key, base_url=spec.base_url)
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
        print(f"harness for agent {self.agent}: watching Tasks in {self.api.namespace}", flush=True)
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
                    for task in sorted(obj["items"], key=lambda t: not self._log_path(t).exists()):
                        self._on_task("ADDED", task)
                else:
                    self._on_task(kind, obj)
        finally:
            halt.set()
            for task in self.running.values():
                task.cancel()
            await asyncio.gather(*self.running.values(), return_exceptions=True)
            await self.client.close()

    def _log_path(self, task: Obj) -> Path:
        meta = task["metadata"]
        return (
            self.state_dir / "sessions" / self.api.namespace / f"{meta['name']}-{meta['uid']}.jsonl"
        )

    def _on_task(self, kind: str, task: Obj) -> None:
        name = task["metadata"]["name"]
        if kind == "DELETED" or not assigned_to(task, self.agent):
            return
        phase = (task.get("status") or {}).get("phase")
        running = self.running.get(name)
        if task["spec"].get("cancel") and running is not None:
            self.cancelled.add(name)
            running.cancel()
            return
        if running is not None or phase in FINAL_PHASES or task["spec"].get("cancel"):
            return
        self.running[name] = asyncio.get_running_loop().create_task(self._work(task))

    async def _work(self, task: Obj) -> None:
        name = task["metadata"]["name"]
        try:
            async with self.slots:
                await self._session(task)
        except Exception:
            log.exception("session of %s failed", name)
        finally:
            self.running.pop(name, None)

    async def _session(self, task: Obj) -> None:
        meta, spec = task["metadata"], task["spec"]
        name, uid = meta["name"], meta["uid"]
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
            await self._finish(name, outcome, meta.get("generation"), None)
            return
        prompt = spec["prompt"]
        if spec.get("acceptanceCriteria"):
            prompt += f"\n\nAcceptance criteria: {spec['acceptanceCriteria']}"
        config = SessionConfig(
            task=f"{self.api.namespace}/{name}",
            agent=self.agent,
            role=self.spec.role,
            prompt=prompt,
            model=self.spec.model,
            system_prompt=self.spec.system_prompt,
            tools=tuple(t.value for t in self.spec.tools),
            limits=effective_limits(
                self.spec.limits, Limits.model_validate(spec.get("limits") or {})
            ),
        )
        status = task.get("status") or {}
        session_status = status.get("session") or {}
        await self.api.patch_status(name, {
            "phase": "Running", "agent": self.agent, "startTime": status.get("startTime") or _now(),
            "session": {"attempts": int(session_status.get("attempts", 0)) + 1,
                        "resumes": int(session_status.get("resumes", 0)) + (1 if resumed else 0),
                        "lastActivityTime": _now()},
        })  # fmt: skip
        sandbox = ClusterSandbox(
            self.api, name, session_token(self.key, uid), self.sandbox_wait_seconds
        )
        tools = SandboxClient(sandbox)
        session = Session(
            config,
            session_log,
            self.client,
            tools,
            self.prices,
            lambda line: print(line, flush=True),
        )
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
            await tools.close()
            session_log.close()
        await self._finish(name, outcome, meta.get("generation"), session.state)

    async def _finish(
        self, name: str, outcome: Obj, generation: int | None, state: State | None
    ) -> None:
        """The final status, keeping the conditions others set (Accepted)."""
        current = ((await self.api.task(name)).get("status") or {}).get("conditions") or []
        status = build_final_status(outcome, generation, current)
        if state is not None:
            status.update(build_usage_status(state))
        await self.api.patch_status(name, status)

    async def _report(self, name: str, session: Session) -> None:
        """Usage and last activity in the Task's status, at most once a second."""
        reported = -1
        while True:
            await asyncio.sleep(1.0)
            if len(session.log.events) != reported:
                reported = len(session.log.events)
                status = build_usage_status(session.state)
                status["session"] = {"lastActivityTime": _now()}
                with contextlib.suppress(kubernetes.client.ApiException):
                    await self.api.patch_status(name, status)
