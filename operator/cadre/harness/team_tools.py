"""Tools the harness answers itself: ``delegate`` work to a teammate, ``wait_for_results``,
``review_result`` of what comes back, and ``remember`` a lesson.

Delegation goes through the operator, which alone creates child Tasks and enforces the Team's
rules: ``delegate`` writes a request (keyed by its tool call id, so a re-sent call asks once)
into the session's own Task status and waits for the answer. ``wait_for_results`` pauses the
session (``Suspend``) until a child delivers or fails; the harness wakes it then.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from cadre.api.review import awaiting_screening, awaits_requester
from cadre.api.task import FINAL_PHASES, DelegationRequest
from cadre.api.team import TeamSpec
from cadre.api.types import Obj
from cadre.harness.memory import MemoryStore, MemoryUnreadable, add
from cadre.harness.replay import State
from cadre.harness.sandbox_client import SandboxClient, SandboxUnavailable, ToolOutcome
from cadre.harness.session import Suspend
from cadre.harness.taskapi import TaskApi
from cadre.sandbox.protocol import ToolInputError, check_pattern

DELEGATE: Obj = {
    "name": "delegate",
    "description": (
        "Hand a piece of work to a teammate you may delegate to. It becomes a child Task worked "
        "in the teammate's own session and sandbox. Its result comes back through "
        "wait_for_results, and you must accept it or request changes with review_result."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "agent": {"type": "string", "description": "The teammate's name."},
            "title": {"type": "string", "description": "A short name for the work."},
            "instructions": {"type": "string", "description": "What to do, completely."},
            "acceptance_criteria": {
                "type": "string",
                "description": "How you will judge the result.",
            },
            "files": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Files you want back with the result: paths or glob patterns "
                "in the teammate's workspace (text files, 64 KiB in all). They are copied into "
                "your workspace under deliveries/<task>/.",
            },
        },
        "required": ["agent", "instructions"],
    },
}
WAIT: Obj = {
    "name": "wait_for_results",
    "description": (
        "Wait until delegated work comes back: returns every result delivered for your review "
        "and every delegated Task that failed. While you wait you hold no sandbox."
    ),
    "input_schema": {"type": "object", "properties": {}},
}
REVIEW: Obj = {
    "name": "review_result",
    "description": (
        "Give your verdict on a result a delegated Task delivered: accept it (the Task "
        "succeeds) or request changes with feedback (its session continues with your feedback)."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "task": {
                "type": "string",
                "description": "The delegated Task's name (may be left out when only one "
                "result waits for review).",
            },
            "decision": {"type": "string", "enum": ["accept", "request_changes"]},
            "feedback": {"type": "string", "description": "What to change (for changes)."},
        },
        "required": ["decision"],
    },
}
SCREEN: Obj = {
    "name": "review_result",
    "description": (
        "Give your verdict on the delivery you are reviewing: accept passes it on to the "
        "requester; request_changes sends it back to the agent that made it, with your feedback."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "decision": {"type": "string", "enum": ["accept", "request_changes"]},
            "feedback": {"type": "string", "description": "What to change (for changes)."},
        },
        "required": ["decision"],
    },
}
REMEMBER: Obj = {
    "name": "remember",
    "description": (
        "Record a short lesson worth knowing in later Tasks; it is shown to you at the start "
        "of every future Task."
    ),
    "input_schema": {
        "type": "object",
        "properties": {"text": {"type": "string", "description": "The lesson, one or two lines."}},
        "required": ["text"],
    },
}


def _error(message: str) -> ToolOutcome:
    return ToolOutcome(message, True)


def _verdict_problem(decision: Any, feedback: Any) -> str | None:
    """What is wrong with a review_result's input, for the model to correct (None: nothing)."""
    if decision not in ("accept", "request_changes"):
        return "review_result: input decision: must be accept or request_changes"
    if not isinstance(feedback, str) or (decision == "request_changes" and not feedback):
        return "review_result: input feedback: say what to change"
    return None


def _changes(round: int, reviewer: str, feedback: str) -> Obj:
    """The ``status.review`` of a delivery sent back: its round, who asked, and what for."""
    return {
        "decision": "ChangesRequested", "round": round, "reviewer": reviewer,
        "lastFeedback": feedback[:8192],
    }  # fmt: skip


def news_of(children: list[Obj], reported: set[str]) -> list[tuple[str, Obj]]:
    """Children with something the requester has not been told: a delivery to review, or an
    end without one (pure; keys go into the log with the result that told them)."""
    news = []
    for child in children:
        status = child.get("status") or {}
        phase = status.get("phase")
        name = child["metadata"]["name"]
        if awaits_requester(child):
            key = f"{name}#delivery-{(status.get('review') or {}).get('deliveries')}"
        elif phase in ("Failed", "Cancelled"):
            key = f"{name}#{phase}"
        else:
            continue
        if key not in reported:
            news.append((key, child))
    return news


def describe(child: Obj) -> str:
    status = child.get("status") or {}
    spec = child["spec"]
    name, agent = child["metadata"]["name"], spec["assignee"].get("agent")
    summary = (status.get("result") or {}).get("summary") or "(no summary)"
    if status.get("phase") == "InReview":
        deliveries = (status.get("review") or {}).get("deliveries")
        title = spec.get("title") or "untitled"
        reviewer = (spec.get("review") or {}).get("reviewer")
        passed = ""
        if reviewer:
            by_reviewer = int((status.get("review") or {}).get("passed") or 0) == deliveries
            passed = (
                f", passed by reviewer {reviewer}"
                if by_reviewer
                else (f", not reviewed: reviewer {reviewer} gave no verdict")
            )
        head = f"Task {name} ({agent}: {title}) delivered result #{deliveries}{passed}"
        return f"{head}, waiting for your review_result:\n{summary}"
    condition: Obj = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), {}
    )
    why = f"{condition.get('reason', '')}: {condition.get('message', '')}".strip(": ")
    return f"Task {name} ({agent}) ended {status.get('phase')} ({why}):\n{summary}"


@dataclass
class TeamTools:
    """The harness-side tools of one session."""

    api: TaskApi
    task: str
    agent: str
    delegation: bool
    """Whether this Agent may delegate in its Team (it is offered delegate/wait/review)."""
    memory: MemoryStore | None = None
    max_memory_entries: int = 100
    review_of: Obj | None = None
    """On a review Task (``spec.reviewOf``): the delivery this session inspects."""
    sandbox: SandboxClient | None = None
    """The session's sandbox, where delivered files are placed (None: the Agent has no
    sandbox tools, so files are shown inline)."""
    answer_within: float = 120.0
    clock: Callable[[], str] = field(
        default=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )

    @property
    def names(self) -> frozenset[str]:
        return frozenset(d["name"] for d in self.definitions())

    def definitions(self) -> list[Obj]:
        tools = [DELEGATE, WAIT, REVIEW] if self.delegation else []
        if self.review_of is not None:  # reviewing a delivery, not its own children's
            tools = [t for t in tools if t is not REVIEW] + [SCREEN]
        return tools + ([REMEMBER] if self.memory is not None else [])

    async def call(self, tool_use_id: str, name: str, input: Obj, state: State) -> ToolOutcome:
        if name == "delegate":
            return await self._delegate(tool_use_id, input)
        if name == "wait_for_results":
            return await self._wait(tool_use_id, state)
        if name == "review_result" and self.review_of is not None:
            return await self._screen(self.review_of, input)
        if name == "review_result":
            return await self._review(input)
        if name == "remember":
            return await self._remember(input)
        return _error(f"unknown tool {name!r}")

    async def pending_news(self, state: State) -> bool:
        """Whether a paused ``wait_for_results`` has something to return now."""
        children = await self.api.children(self.task)
        if news_of(children, state.reported):
            return True
        return not any(
            (c.get("status") or {}).get("phase") not in FINAL_PHASES and not awaits_requester(c)
            for c in children
        )

    async def _delegate(self, tool_use_id: str, input: Obj) -> ToolOutcome:
        files = input.get("files") or []
        try:
            if not isinstance(files, list):
                raise ToolInputError("files: must be a list of paths or glob patterns")
            for i, pattern in enumerate(files):
                check_pattern(pattern, f"files[{i}]")
            request = DelegationRequest.model_validate(
                {
                    "agent": input.get("agent"),
                    "title": input.get("title") or "",
                    "instructions": input.get("instructions"),
                    "acceptanceCriteria": input.get("acceptance_criteria") or "",
                    "deliverables": files,
                }
            )
        except ToolInputError as err:
            return _error(f"delegate: input {err}")
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            return _error(f"delegate: input {where}: {first['msg']}")
        if not request.instructions:
            return _error("delegate: input instructions: must say what to do")
        current = (await self.api.task(self.task)).get("status") or {}
        if tool_use_id not in (current.get("delegations") or {}):
            entry = request.model_dump(by_alias=True, exclude_none=True, exclude={"state"})
            await self.api.patch_status(self.task, {"delegations": {tool_use_id: entry}})
        deadline = time.monotonic() + self.answer_within
        while time.monotonic() < deadline:
            status = (await self.api.task(self.task)).get("status") or {}
            answer = (status.get("delegations") or {}).get(tool_use_id) or {}
            if answer.get("state") == "Created":
                return ToolOutcome(
                    f"Delegated to {request.agent} as Task {answer['child']}. Call "
                    "wait_for_results to receive its result.",
                    False,
                )
            if answer.get("state") == "Refused":
                return _error(f"delegation refused: {answer.get('message')}")
            await asyncio.sleep(0.2)
        return _error(f"the operator did not answer the delegation within {self.answer_within:g}s")

    async def _wait(self, tool_use_id: str, state: State) -> ToolOutcome:
        children = await self.api.children(self.task)
        news = news_of(children, state.reported)
        if news:
            parts = []
            for n, (_, child) in enumerate(news):
                parts.append(describe(child) + await self._hand_over(f"{tool_use_id}-{n}", child))
            text = "\n\n".join(parts)
            return ToolOutcome(text, False, reported=frozenset(k for k, _ in news))
        unreviewed = [c["metadata"]["name"] for c in children if awaits_requester(c)]
        if unreviewed:
            return _error(f"waiting for your review_result first: {', '.join(unreviewed)}")
        if any((c.get("status") or {}).get("phase") not in FINAL_PHASES for c in children):
            raise Suspend
        return ToolOutcome("No delegated Task is outstanding.", False)

    async def _hand_over(self, call_id: str, child: Obj) -> str:
        """Delivered files into this session's workspace, under ``deliveries/<task>/``; what
        to tell the model about them. Each file is a ``write`` with an id of its own made from
        the wait call's, so a re-run after a crash writes nothing twice."""
        result = (child.get("status") or {}).get("result") or {}
        files, omitted = result.get("files") or [], result.get("filesOmitted") or []
        if not files and not omitted:
            return ""
        folder = f"deliveries/{child['metadata']['name']}"
        lines = []
        sandbox = self.sandbox
        if files and sandbox is None:
            lines.append("\nDelivered files:")
            lines += [f"--- {f['path']} ---\n{f.get('content', '')}" for f in files]
        elif files and sandbox is not None:
            lines.append(f"\nDelivered files, now in your workspace under {folder}/:")
            for i, file in enumerate(files):
                path = f"{folder}/{file['path']}"
                try:
                    written = await sandbox.call(
                        f"{call_id}-f{i}", "write", {"path": path, "content": file["content"]}
                    )
                except SandboxUnavailable as err:
                    written = ToolOutcome(str(err), True)
                size = f"{file.get('sizeBytes', 0)} bytes"
                fault = f" (not written: {written.content})" if written.is_error else ""
                lines.append(f"- {path} ({size}){fault}")
        if omitted:
            lines.append("Not delivered:")
            lines += [f"- {why}" for why in omitted]
        return "\n".join(lines)

    async def _review(self, input: Obj) -> ToolOutcome:
        name, decision = input.get("task"), input.get("decision")
        feedback = input.get("feedback") or ""
        problem = _verdict_problem(decision, feedback)
        if problem is not None:
            return _error(problem)
        children = await self.api.children(self.task)
        if name is None:
            waiting = [c for c in children if awaits_requester(c)]
            if len(waiting) != 1:
                names = ", ".join(c["metadata"]["name"] for c in waiting) or "none"
                return _error(
                    f"review_result: input task: name one of the results waiting: {names}"
                )
            name = waiting[0]["metadata"]["name"]
        child = next((c for c in children if c["metadata"]["name"] == name), None)
        if child is None or not isinstance(name, str):
            return _error(f"review_result: {name!r} is not a Task you delegated")
        if not awaits_requester(child):
            phase = (child.get("status") or {}).get("phase")
            return _error(f"review_result: Task {name} has no result waiting for review ({phase})")
        review = (child.get("status") or {}).get("review") or {}
        if decision == "accept":
            verdict: Obj = {"decision": "Accepted", "reviewer": self.agent}
            await self.api.patch_status(name, {"review": verdict})
            return ToolOutcome(f"Accepted the result of {name}; it ends Succeeded.", False)
        deliveries = int(review.get("deliveries") or 1)
        max_rounds = int((child["spec"].get("review") or {}).get("maxRounds") or 3)
        await self.api.patch_status(name, {"review": _changes(deliveries, self.agent, feedback)})
        if deliveries > max_rounds:
            return ToolOutcome(
                f"Changes requested after {max_rounds} rounds already: {name} ends Failed.", False
            )
        return ToolOutcome(
            f"Sent {name} back with your feedback (round {deliveries} of at most {max_rounds}). "
            "Call wait_for_results for its next result.",
            False,
        )

    async def _screen(self, target: Obj, input: Obj) -> ToolOutcome:
        """The Team's reviewer's verdict on one delivery: a pass lets the requester see it;
        changes reopen the delegated Task's session, as a requester's would."""
        decision, feedback = input.get("decision"), input.get("feedback") or ""
        problem = _verdict_problem(decision, feedback)
        if problem is not None:
            return _error(problem)
        name, delivery = str(target["task"]), int(target["delivery"])
        task = await self.api.task(name)
        if awaiting_screening(task) != delivery:
            return _error(f"review_result: delivery #{delivery} of {name} no longer waits for you")
        if decision == "accept":
            await self.api.patch_status(
                name, {"review": {"screened": delivery, "passed": delivery}}
            )
            return ToolOutcome(f"Passed delivery #{delivery} of {name} on to the requester.", False)
        await self.api.patch_status(name, {"review": _changes(delivery, self.agent, feedback)})
        return ToolOutcome(f"Sent {name} back with your feedback (round {delivery}).", False)

    async def _remember(self, input: Obj) -> ToolOutcome:
        text = input.get("text")
        if not isinstance(text, str) or not text.strip():
            return _error("remember: input text: must be a non-empty string")
        assert self.memory is not None
        try:
            await self.memory.update(
                lambda entries: add(entries, text, self.task, self.clock(), self.max_memory_entries)
            )
        except MemoryUnreadable as err:
            return _error(f"remember: the memory cannot be updated: {err}")
        return ToolOutcome("Remembered.", False)


def team_context(team: str, spec: TeamSpec, roles: dict[str, str], agent: str) -> str:
    """The team part of the system prompt: who is on it and whom this Agent may ask (pure)."""
    me = next((m for m in spec.members if m.agent == agent), None)
    lines = [f"You work in team {team}. Its members:"]
    lines += [f"- {m.agent}: {roles.get(m.agent, '(no such Agent)')}" for m in spec.members]
    if me is not None and me.delegates_to:
        lines.append(
            f"You may delegate to: {', '.join(me.delegates_to)}. Use delegate, then "
            "wait_for_results, and review every result with review_result before you rely on it."
        )
    else:
        lines.append("You do your work yourself; you do not delegate.")
    return "\n".join(lines)
