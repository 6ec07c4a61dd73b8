"""One Task's session: the conversation with the model, its tool calls, its limits, all driven
by (and resumed from) its session log.

The log is the state. ``replay.replay`` folds its events into the conversation so far;
``Session.run`` continues from there, logging each step before acting on it:
``span.model_request_start`` before a model call, ``span.model_request_end`` + ``agent.message``
(one write) when it returns, ``agent.tool_use`` before a tool call is sent, ``agent.tool_result``
when it returns, ``session.status_terminated`` at the end. After a crash, an unanswered model
call is issued again and an unanswered tool call is sent again with the same ``tool_use_id``
(the sandbox answers from its store if it already ran).

A session can also pause without ending (``session.status_idle``): waiting on delegated Tasks
(``WaitingForChildren``: the wait tool re-runs when it wakes) or with a deliverable in review
(``AwaitingReview``: a ``user.review`` verdict accepts it or reopens the conversation with the
feedback). A paused session holds nothing but its log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import anthropic

from cadre.api.policy import Decision, HookPoint
from cadre.api.types import Obj
from cadre.harness.context import (
    ContextPlan,
    boundary,
    estimate,
    plan_for,
    summary_request,
    with_breakpoint,
)
from cadre.harness.hook_runner import HookRunner, refusal
from cadre.harness.logs import brief
from cadre.harness.model_errors import ModelFailure, classify
from cadre.harness.permissions import Governance, ToolAnswer, ToolDecision, where
from cadre.harness.pricing import Prices
from cadre.harness.replay import (
    AWAITING_APPROVAL,
    AWAITING_REVIEW,
    USAGE_KEYS,
    WAITING,
    State,
    apply,
    final_text,
)
from cadre.harness.sandbox_client import SandboxClient, SandboxUnavailable, ToolOutcome
from cadre.harness.sessionlog import SessionLog
from cadre.sandbox.protocol import TOOL_SCHEMAS

LESSON_REQUEST = (
    "This Task is over. In one or two sentences, write the lesson from it that is worth "
    "remembering in your future Tasks; it goes into your memory. Answer with the lesson only."
)
MAX_LESSON_CHARS = 500


class Suspend(Exception):  # noqa: N818 - control flow: the session pauses, it did not fail
    """Raised by a harness-side tool: nothing to answer yet, the session waits idle."""


class HarnessTools(Protocol):
    """Tools the harness answers itself (delegation, review, memory), not the sandbox."""

    @property
    def names(self) -> frozenset[str]: ...

    async def call(self, tool_use_id: str, name: str, input: Obj, state: State) -> ToolOutcome: ...


class ToolSets:
    """Several sets of harness-side tools as one (team tools, MCP tools)."""

    def __init__(self, *sets: HarnessTools) -> None:
        self._sets = sets

    @property
    def names(self) -> frozenset[str]:
        return frozenset().union(*(s.names for s in self._sets))

    async def call(self, tool_use_id: str, name: str, input: Obj, state: State) -> ToolOutcome:
        for tools in self._sets:
            if name in tools.names:
                return await tools.call(tool_use_id, name, input, state)
        return ToolOutcome(f"error: no tool {name!r} is offered", True)


@dataclass(frozen=True)
class Verdict:
    """A requester's (or a human's) decision on a delivered result."""

    key: str
    """Identifies the verdict, so it is applied once however often the harness sees it."""
    accepted: bool
    feedback: str = ""
    reviewer: str = ""
    round: int = 0
    """For changes requested: which round this is (1 for the first)."""


@dataclass(frozen=True)
class SessionLimits:
    max_turns: int | None = None
    max_tokens: int | None = None
    timeout_seconds: float | None = None
    max_cost_usd: Decimal | None = None


@dataclass(frozen=True)
class SessionConfig:
    """What a session needs to know, fixed when it is created (and logged then)."""

    task: str
    """``namespace/name``, for the transcript."""
    agent: str
    role: str
    prompt: str
    model: str
    system_prompt: str = ""
    tools: tuple[str, ...] = tuple(TOOL_SCHEMAS)
    limits: SessionLimits = SessionLimits()
    max_output_tokens: int = 8192
    context: str = ""
    """The team roster and the Agent's memory, fixed when the session is created (and logged
    then, so a resumed session sends the very same prefix)."""
    extra_tools: tuple[Obj, ...] = ()
    """Definitions of the harness-side tools offered to this session."""
    review_required: bool = False
    """Whether a finished answer waits ``InReview`` for a verdict instead of succeeding."""
    max_review_rounds: int = 3
    context_plan: ContextPlan | None = None
    """How the context window is managed (None: the defaults for the model)."""
    model_patience_seconds: float = 300.0
    """How long model calls failing in a row (rate limited, overloaded, server errors, cut
    streams: each after the SDK's own retries) are tried again before the session fails."""
    plan: ContextPlan = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plan", self.context_plan or plan_for(self.model))

    def system_blocks(self) -> list[Obj]:
        """The stable prefix, with the cache marker on its last block (tools carry their own)."""
        text = f"You are {self.agent}, an agent in a Cadre organization. Your role: {self.role}"
        blocks: list[Obj] = [{"type": "text", "text": text}]
        if self.system_prompt:
            blocks.append({"type": "text", "text": self.system_prompt})
        if self.context:
            blocks.append({"type": "text", "text": self.context})
        blocks[-1] = {**blocks[-1], "cache_control": {"type": "ephemeral"}}
        return blocks

    def tool_definitions(self) -> list[Obj]:
        tools = [
            {"name": name, **TOOL_SCHEMAS[name]} for name in self.tools if name in TOOL_SCHEMAS
        ] + [dict(tool) for tool in self.extra_tools]
        if tools:
            tools[-1] = {**tools[-1], "cache_control": {"type": "ephemeral"}}
        return tools


class Session:
    """Runs one session to its end, from wherever its log stopped."""

    def __init__(
        self,
        config: SessionConfig,
        log: SessionLog,
        client: anthropic.AsyncAnthropic,
        sandbox: SandboxClient,
        prices: Prices,
        transcript: Callable[[str], None] = print,
        harness_tools: HarnessTools | None = None,
        delegated_cost: Callable[[], Decimal] = lambda: Decimal(0),
        governance: Callable[[], Awaitable[Governance]] | None = None,
        answer_of: Callable[[str], ToolAnswer | None] = lambda _: None,
    ) -> None:
        self.governance = governance
        """The Policies that govern this Agent now (looked up before each undecided call)."""
        self.answer_of = answer_of
        """A human's answer to a call that asked, from the Task (None: none yet)."""
        self.harness_tools = harness_tools
        self.delegated_cost = delegated_cost
        """What the Task's delegated work (and its reviews) cost so far: a Task's maxCostUSD
        caps its whole tree, so a parent stops once its own spend and this reach it."""
        self.config = config
        self.log = log
        self._first_token: float | None = None
        """Seconds from the current model call's request to its first streamed event."""
        self.client = client
        self.sandbox = sandbox
        self.prices = prices
        self._say = transcript
        self._state = State()
        self.hooks = HookRunner(config.task, config.agent, log, sandbox, self._caught_up,
                                self.say)  # fmt: skip

    def _caught_up(self) -> State:
        """The state with every event logged since the last look folded in (no re-replay:
        a long session's turns stay as cheap as its first)."""
        for event in self.log.events[self._state.applied :]:
            apply(self._state, event, self.prices)
        return self._state

    @property
    def state(self) -> State:
        return self._caught_up()

    def cancel(self, message: str) -> Obj:
        """End the session Cancelled (its Task was cancelled); returns the outcome."""
        state = self._caught_up()
        if state.outcome is None:
            self._end(state, "Cancelled", "Cancelled", message)
        outcome = self._caught_up().outcome
        assert outcome is not None
        return outcome

    def say(self, text: str) -> None:
        for line in text.splitlines() or [""]:
            self._say(f"[{self.config.task}] {line}")

    def start(self) -> State:
        """Create the log's first events if it is new; the state the log describes."""
        if not self.log.events:
            self.log.append_all([
                ("session.created", {"task": self.config.task, "agent": self.config.agent,
                                     "model": self.config.model, "context": self.config.context}),
                ("user.message", {"content": self.config.prompt}),
            ])  # fmt: skip
        return self._caught_up()

    def apply_verdict(self, verdict: Verdict) -> bool:
        """Apply a verdict on the delivered result, once: acceptance ends the session
        Succeeded; changes requested reopen it with the feedback, or end it Failed past
        ``max_review_rounds``. False when there was nothing to apply."""
        state = self._caught_up()
        if state.idle != AWAITING_REVIEW or verdict.key in state.verdicts:
            return False
        by = f" by {verdict.reviewer}" if verdict.reviewer else ""
        max_rounds = self.config.max_review_rounds
        if verdict.accepted:
            content = f"Your result was accepted{by}."
        else:
            content = (
                f"Changes requested{by} (round {verdict.round} of at most {max_rounds}):\n"
                f"{verdict.feedback}"
            )
        self.log.append(
            "user.review", key=verdict.key, accepted=verdict.accepted, round=verdict.round,
            reviewer=verdict.reviewer, content=content,
        )  # fmt: skip
        self.say(content)
        state = self._caught_up()
        if verdict.accepted:
            self._end(state, "Succeeded", "Accepted", f"the result was accepted{by}")
        elif verdict.round > max_rounds:
            self._end(
                state, "Failed", "ReviewRoundsExhausted",
                f"changes were still requested after {max_rounds} review rounds",
            )  # fmt: skip
        return True

    async def run(self) -> Obj:
        """Continue the session until it ends or pauses; returns how (also logged)."""
        state = self.start()
        if state.idle == AWAITING_REVIEW:
            return self._paused(state)
        if state.idle == AWAITING_APPROVAL:
            if not self.approval_ready(state):
                return self._paused(state)
            self.log.append("session.status_running", reason="answered")
        elif state.idle == WAITING:
            self.log.append("session.status_running", reason="woken")
        elif state.outcome is None and self.log.events[-1]["type"] not in (
            "user.message",
            "user.review",
        ):
            last = self.log.events[-1]["seq"]
            self.log.append("session.resumed", from_seq=last)
            self.say(f"resumed after event {last}")
        state = self._caught_up()
        while state.outcome is None and state.idle is None:
            state = await self._step(state)
        if state.outcome is None:
            return self._paused(state)
        await self._at_end(state)
        return state.outcome

    async def lesson(self, within: float = 60.0) -> str:
        """The model's own lesson from this ended session, asked once: the answer is logged
        (``session.lesson``, with its usage), so a harness restarted afterwards does not ask
        again. Asked with the same system prompt, tools and conversation, so it reads them
        from the prompt cache. "" when there is nothing to ask on (the conversation does not
        end with a finished answer, or a limit ended it) or the model did not answer."""
        state = self._caught_up()
        if state.lesson is not None:
            return state.lesson
        outcome = state.outcome or {}
        last = state.messages[-1] if state.messages else {}
        finished = last.get("role") == "assistant" and not any(
            b.get("type") == "tool_use" for b in last.get("content") or []
        )
        if not finished or str(outcome.get("reason", "")).startswith("Max") or self.over_budget():
            return ""
        # The conversation (with its cache breakpoint, so it is read from the cache) and the
        # question after it.
        request = self._request(state.messages, max_tokens=300, compact=False)
        request["messages"] = [*request["messages"], {"role": "user", "content": LESSON_REQUEST}]
        try:
            async with asyncio.timeout(within):
                message = await self.client.beta.messages.create(**request)
        except (TimeoutError, anthropic.APIError) as err:
            self.say(f"no lesson: {err}")
            return ""
        text = " ".join(
            " ".join(getattr(b, "text", "").split()) for b in message.content if b.type == "text"
        ).strip()[:MAX_LESSON_CHARS]
        usage = {key: int(getattr(message.usage, key, 0) or 0) for key in USAGE_KEYS}
        self.log.append("session.lesson", text=text, usage=usage, message_id=message.id)
        self.say(f"lesson: {text}")
        return self._caught_up().lesson or ""

    def approval_ready(self, state: State | None = None) -> bool:
        """Whether the call the session waits on has its answer, or its deadline passed."""
        state = state or self._caught_up()
        if state.idle != AWAITING_APPROVAL:
            return False
        return self.answer_of(state.awaiting) is not None or time.time() >= self.deadline(state)

    def deadline(self, state: State) -> float:
        decided = state.decisions.get(state.awaiting) or {}
        return float(decided.get("time", 0)) + float(decided.get("timeout_seconds", 0))

    @staticmethod
    def _paused(state: State) -> Obj:
        phase = "InReview" if state.idle == AWAITING_REVIEW else "Waiting"
        paused: Obj = {
            "outcome": phase,
            "reason": state.idle,
            "message": "",
            "result": state.idle_result,
        }
        if state.idle == AWAITING_APPROVAL:
            decided = state.decisions.get(state.awaiting) or {}
            call = next((b for b in state.pending if b["id"] == state.awaiting), {})
            rule = where(str(decided.get("policy") or ""), str(decided.get("rule") or ""))
            paused["message"] = (
                f"tool call {state.awaiting} ({call.get('name')}) waits for a human: {rule}"
            )
            paused["pending"] = {state.awaiting: {
                "tool": str(call.get("name", "")),
                "input": brief(call.get("input", {}), 2048),
                "policy": decided.get("policy") or None, "rule": decided.get("rule", ""),
                "message": str(decided.get("message", ""))[:256],
                "since": _stamp(float(decided.get("time", 0))),
                "deadline": _stamp(float(decided.get("time", 0))
                                   + float(decided.get("timeout_seconds", 0))),
            }}  # fmt: skip
        return paused

    def _idle(self, state: State, reason: str, result: str = "") -> State:
        self.log.append("session.status_idle", reason=reason, result=result[:4096])
        self.say(f"idle: {reason}")
        return self._caught_up()

    def _end(self, state: State, outcome: str, reason: str, message: str) -> State:
        result = final_text(state)
        self.log.append(
            "session.status_terminated",
            outcome=outcome,
            reason=reason,
            message=message,
            result=result[:4096],
        )
        self.say(f"{outcome}: {reason}: {message}")
        return self._caught_up()

    def _tree_cost(self, state: State) -> Decimal:
        return state.cost_usd + self.delegated_cost()

    def over_budget(self) -> bool:
        """Whether the Task's tree has spent its maxCostUSD (no further call is made then,
        the end-of-Task lesson included)."""
        cap = self.config.limits.max_cost_usd
        return cap is not None and self._tree_cost(self._caught_up()) >= cap

    def _limit_reached(self, state: State) -> tuple[str, str] | None:
        limits = self.config.limits
        if limits.max_turns is not None and state.turns >= limits.max_turns:
            return (
                "MaxTurnsReached",
                f"the session made {state.turns} model calls; maxTurns is {limits.max_turns}",
            )
        if limits.max_tokens is not None and state.tokens >= limits.max_tokens:
            return (
                "MaxTokensReached",
                f"the session used {state.tokens} tokens; maxTokens is {limits.max_tokens}",
            )
        if limits.max_cost_usd is not None and self._tree_cost(state) >= limits.max_cost_usd:
            delegated = self.delegated_cost()
            spent = f"the session cost ${state.cost_usd:.4f}"
            if delegated:
                spent = f"the Task's tree cost ${state.cost_usd + delegated:.4f} ({spent})"
            return "MaxCostReached", f"{spent}; maxCostUSD is {limits.max_cost_usd}"
        if (
            limits.timeout_seconds is not None
            and time.time() - state.started_at >= limits.timeout_seconds
        ):
            return (
                "TimeoutReached",
                f"the session ran longer than its timeout of {limits.timeout_seconds:g}s",
            )
        return None

    async def _step(self, state: State) -> State:
        stop = state.last_stop
        last = state.messages[-1]["content"][-1:] if state.messages else []
        cut_short = stop in ("max_tokens", "model_context_window_exceeded")
        if cut_short and last and last[0].get("type") == "tool_use":
            # Its input may be cut off: running it could do something the model never meant.
            return self._end(
                state,
                "Failed",
                "OutputTruncated",
                f"the model's tool call was cut off ({stop})",
            )
        if state.pending:
            await self._run_tools(state)
            return self._caught_up()
        if stop in ("end_turn", "stop_sequence"):
            sent_back = await self._before_delivery(state)
            if sent_back is not None:
                return sent_back
            if self.config.review_required:
                return self._idle(state, AWAITING_REVIEW, final_text(state))
            return self._end(state, "Succeeded", "Completed", "the agent finished its work")
        if stop == "refusal":
            return self._end(state, "Failed", "Refusal", "the model declined to continue")
        # None (start), tool_results, max_tokens (continue the text), pause_turn and
        # compaction (resume the server's turn) all ask the model again with the conversation
        # as it is, once it fits the window.
        reached = self._limit_reached(state)
        if reached is not None:
            return self._end(state, "Failed", *reached)
        if state.compacting is not None:
            await self._compact(state, state.compacting["reason"], state.compacting["cut"])
            return self._caught_up()
        if stop == "model_context_window_exceeded" and not state.compacted_last:
            await self._overflow(state, "window", "the model's answer reached the context window")
            return self._caught_up()
        if await self._needs_compaction(state):
            await self._compact(state, "threshold" if self.config.plan.mode == "client" else
                                "overflow")  # fmt: skip
            return self._caught_up()
        await self._call_model(state)
        return self._caught_up()

    def _size(self, state: State) -> int:
        """The next request's input tokens as known: the latest answer's measured input and
        output, plus an estimate of what was added since (or, right after a client-side
        compaction, an estimate of the whole request)."""
        if state.context_tokens is not None:
            return state.context_tokens + state.added_tokens
        config = self.config
        return estimate([config.system_blocks(), config.tool_definitions(), state.messages])

    async def _needs_compaction(self, state: State) -> bool:
        """Client-side: compact at the trigger. Server-side the API compacts at the trigger,
        but a prompt over the whole window (a huge tool result) must shrink here first. Near
        the limit the estimate is checked with ``count_tokens``."""
        plan = self.config.plan
        if plan.mode == "off" or state.compacted_last:
            return False
        limit = plan.trigger if plan.mode == "client" else plan.window
        size = self._size(state)
        if size < limit * 0.85:
            return False
        exact = await self._count_tokens(state)
        return (exact if exact is not None else size) >= limit

    async def _count_tokens(self, state: State) -> int | None:
        try:
            async with asyncio.timeout(30):
                counted = await self.client.beta.messages.count_tokens(
                    model=self.config.model,
                    system=self.config.system_blocks(),  # type: ignore[arg-type]
                    tools=self.config.tool_definitions(),  # type: ignore[arg-type]
                    messages=state.messages,  # type: ignore[arg-type]
                    **self._betas(),
                )
        except (TimeoutError, anthropic.APIError):
            return None  # an endpoint without count_tokens: the estimate decides
        return int(counted.input_tokens)

    def _betas(self) -> Obj:
        betas = self.config.plan.betas()
        return {"betas": betas} if betas else {}

    def _request(self, messages: list[Obj], max_tokens: int, compact: bool = True) -> Obj:
        """Everything a model request sends but its streaming: the stable prefix (cached),
        the conversation with its moving cache breakpoint, and server-side compaction where
        the plan has it."""
        request: Obj = {
            "model": self.config.model,
            "max_tokens": max_tokens,
            "system": self.config.system_blocks(),
            "tools": self.config.tool_definitions(),
            "messages": with_breakpoint(messages),
            **self._betas(),
        }
        management = self.config.plan.context_management(compact)
        if management is not None:
            request["context_management"] = management
        return request

    async def _overflow(self, state: State, reason: str, what: str) -> None:
        """The window was exceeded: compact once and go on; a second time in a row, fail."""
        plan = self.config.plan
        if plan.mode == "off" or state.recovering or state.compacted_last:
            tried = "" if plan.mode == "off" else " even after a compaction"
            self._end(state, "Failed", "ContextWindowExceeded",
                      f"{what}{tried} (window {plan.window} tokens)")  # fmt: skip
            return
        await self._compact(state, reason)

    async def _compact(self, state: State, reason: str, cut: int | None = None) -> None:
        """Client-side compaction: the model summarises the conversation before ``cut``; the
        summary and the turns from ``cut`` on replace it. Logged before (with the cut, so a
        resumed session redoes the same one) and after (with the summary)."""
        plan = self.config.plan
        if cut is None:
            cut = boundary(state.messages, plan.keep_recent_turns)
            if cut is None:
                kept = plan.keep_recent_turns
                self._end(state, "Failed", "ContextWindowExceeded",
                          f"the context window ({plan.window} tokens) is full and nothing is "
                          f"older than the {kept} turns kept verbatim")  # fmt: skip
                return
            self.log.append("span.compaction_start", reason=reason, cut=cut)
            self.say(f"compacting the conversation ({reason})")
        config = self.config
        older = estimate([config.system_blocks(), config.tool_definitions(), state.messages[:cut]])
        too_long = (state.compacting or {}).get("too_long", 0)
        fit = too_long > 0 or older > plan.window * 0.9
        # A summary is asked for, not compacted again (old tool results may still be cleared).
        request = self._request(summary_request(state.messages, cut, plan.instructions, fit),
                                max_tokens=min(config.max_output_tokens, 8192),
                                compact=False)  # fmt: skip
        message = await self._ask(state, request)
        if message is None:
            return
        summary = "\n".join(b.text for b in message.content if b.type == "text").strip()
        if not summary:
            self._end(state, "Failed", "CompactionFailed", "the model wrote no summary")
            return
        usage = {key: int(getattr(message.usage, key, 0) or 0) for key in USAGE_KEYS}
        self.log.append("session.compacted", path="client", reason=reason, cut=cut,
                        summary=summary, usage=usage, message_id=message.id)  # fmt: skip
        self.say(f"compacted: {len(state.messages)} messages into a summary and "
                 f"{len(state.messages) - cut} kept")  # fmt: skip
        after = self._caught_up()
        if self._size(after) > plan.window:
            self._end(after, "Failed", "ContextWindowExceeded",
                      f"even compacted, the conversation needs about {self._size(after)} tokens "
                      f"of the {plan.window}-token window")  # fmt: skip

    async def _ask(self, state: State, request: Obj) -> Any:
        """One streamed model call; None when it failed (logged, and the session ended or
        left to try again: the step loop re-issues it)."""
        remaining = None
        if self.config.limits.timeout_seconds is not None:
            remaining = max(
                self.config.limits.timeout_seconds - (time.time() - state.started_at), 0.001
            )
        self._first_token = None
        try:
            async with asyncio.timeout(remaining):
                asked = time.monotonic()
                async with self.client.beta.messages.stream(**request) as stream:
                    async for _ in stream:  # the first streamed event: time to first token
                        self._first_token = time.monotonic() - asked
                        break
                    return await stream.get_final_message()
        except TimeoutError:
            limit = self.config.limits.timeout_seconds or 0
            self._end(state, "Failed", "TimeoutReached",
                      f"the session ran longer than its timeout of {limit:g}s")  # fmt: skip
            return None
        except Exception as err:  # classified below; anything else propagates
            failure = classify(err)
            if failure is None:
                raise
        await self._failed(state, failure)
        return None

    async def _failed(self, state: State, failure: ModelFailure) -> None:
        self.log.append("span.model_request_error", turn=state.turns + 1, **failure.event())
        self.say(f"model call failed: {failure.message}")
        state = self._caught_up()
        if failure.too_long:
            if state.compacting is not None:  # the summary request itself is too long
                if state.compacting.get("too_long", 0) > 1:  # even with results shortened
                    self._end(state, "Failed", "ContextWindowExceeded", failure.message)
            else:
                await self._overflow(state, "prompt_too_long", failure.message)
            return
        waited = time.time() - state.streak_started
        patience = self.config.model_patience_seconds
        if not failure.retryable or waited >= patience:
            tried = f" (tried again for {waited:.0f}s)" if failure.retryable else ""
            self._end(state, "Failed", failure.reason, failure.message + tried)
            return
        backoff = failure.retry_after
        if backoff is None:
            backoff = min(2.0 ** (state.error_streak - 1), 60.0)
        await asyncio.sleep(min(backoff, max(patience - waited, 0.0)))

    async def _call_model(self, state: State) -> None:
        turn = state.turns + 1
        self.log.append("span.model_request_start", turn=turn)
        request = self._request(state.messages, self.config.max_output_tokens)
        message = await self._ask(state, request)
        if message is None:
            return
        content = [block.model_dump(exclude_none=True) for block in message.content]
        usage = {key: int(getattr(message.usage, key, 0) or 0) for key in USAGE_KEYS}
        end = {
            "turn": turn,
            "usage": usage,
            "stop_reason": message.stop_reason,
            "message_id": message.id,
        }
        if self._first_token is not None:
            end["first_token_seconds"] = round(self._first_token, 4)
        applied = getattr(message.context_management, "applied_edits", None) or []
        if applied:  # the API cleared old tool results (it does again on every request)
            end["applied_edits"] = [edit.model_dump(exclude_none=True) for edit in applied]
        answer = {"content": content, "stop_reason": message.stop_reason}
        events: list[tuple[str, Obj]] = [("span.model_request_end", end),
                                         ("agent.message", answer)]  # fmt: skip
        compacting = [
            {key: int(getattr(it, key, 0) or 0) for key in USAGE_KEYS}
            for it in (getattr(message.usage, "iterations", None) or [])
            if getattr(it, "type", "") == "compaction"
        ]
        if any(block.get("type") == "compaction" for block in content):
            # The API compacted: what it spent on that is not in the top-level usage.
            spent = {key: sum(u[key] for u in compacting) for key in USAGE_KEYS}
            events.append(("session.compacted", {"path": "server", "reason": "threshold",
                                                  "usage": spent}))  # fmt: skip
        self.log.append_all(events)
        for block in content:
            if block.get("type") == "text" and block.get("text"):
                self.say(f"{self.config.agent}: {block['text']}")
            elif block.get("type") == "tool_use":
                self.say(f"{self.config.agent} -> {block['name']} {brief(block.get('input'))}")
            elif block.get("type") == "compaction":
                self.say("compacted by the model API")

    async def _gate(self, block: Obj) -> str | None:
        """What the Policies let this call do: None to run it, an error for the model when
        it may not, or ``AWAITING_APPROVAL`` when it waits for a human. Each decision and each
        answer is logged once, before it is acted on."""
        call_id = block["id"]
        state = self._caught_up()
        if call_id not in state.decisions and self.governance is not None:
            governance = await self.governance()
            variables = {"tool": block["name"], "input": block.get("input", {})}
            answers = await self.hooks.run(governance, HookPoint.BEFORE_TOOL_CALL, call_id,
                                           variables, block["name"])  # fmt: skip
            refused = refusal(answers)
            if refused is not None:
                return f"This call is denied by {_by(refused)}: {refused['message']}"
            decided = governance.decide(block["name"], self._input(block))
            if not decided.policy and decided.decision == Decision.ALLOW:
                return None  # no Policy governs this Agent: nothing to log
            self.log.append("agent.tool_decision", tool_use_id=call_id, **decided.to_event(),
                            timeout_seconds=decided.timeout_seconds,
                            on_timeout=decided.on_timeout)  # fmt: skip
            self.say(f"   policy: {decided.decision.value} ({decided.explain()})")
            state = self._caught_up()
        decided_event = state.decisions.get(call_id)
        if decided_event is None or decided_event["decision"] == "Allow":
            return None
        why = ToolDecision(
            Decision(decided_event["decision"]), decided_event.get("policy", ""),
            decided_event.get("rule", ""), decided_event.get("message", ""),
        )  # fmt: skip
        if decided_event["decision"] == "Deny":
            return f"This call is denied by {why.explain()}."
        if call_id not in state.confirmations:
            answer = self.answer_of(call_id)
            if answer is None and time.time() < float(decided_event["time"]) + float(
                    decided_event.get("timeout_seconds", 0)):  # fmt: skip
                return AWAITING_APPROVAL
            if answer is None:
                approved = decided_event.get("on_timeout") == "Approve"
                answer = ToolAnswer(approved, "no answer before the deadline", "the timeout")
            self.log.append(
                "user.tool_confirmation", tool_use_id=call_id, approved=answer.approved,
                reason=answer.reason, by=answer.by,
            )  # fmt: skip
            self.say(f"   {'approved' if answer.approved else 'rejected'} by {answer.by}"
                     + (f": {answer.reason}" if answer.reason else ""))  # fmt: skip
            state = self._caught_up()
        confirmed = state.confirmations[call_id]
        if confirmed["approved"]:
            return None
        reason = f": {confirmed['reason']}" if confirmed.get("reason") else ""
        return f"This call was rejected by {confirmed['by']}{reason}."

    async def _run_tools(self, state: State) -> None:
        for block in state.pending:
            if block["id"] in state.results:
                continue
            gate = await self._gate(block)
            if gate == AWAITING_APPROVAL:
                if self.log.events[-1]["type"] != "session.status_idle":
                    self.log.append("session.status_idle", reason=AWAITING_APPROVAL,
                                    tool_use_id=block["id"], result="")  # fmt: skip
                    self.say(f"idle: {AWAITING_APPROVAL} ({block['id']})")
                return
            if gate is not None:
                self.log.append("agent.tool_result", tool_use_id=block["id"], content=gate,
                                is_error=True)  # fmt: skip
                self.say(f"   {gate}")
                continue
            given = self._input(block)
            if block["id"] not in state.sent:
                self.log.append(
                    "agent.tool_use",
                    tool_use_id=block["id"],
                    name=block["name"],
                    input=given,
                )
            extra: Obj = {}
            try:
                if self.harness_tools is not None and block["name"] in self.harness_tools.names:
                    outcome = await self.harness_tools.call(
                        block["id"], block["name"], given, state
                    )
                    extra = {"reported": sorted(outcome.reported)} if outcome.reported else {}
                else:
                    outcome = await self.sandbox.call(block["id"], block["name"], given)
            except Suspend:
                if self.log.events[-1]["type"] != "session.status_idle":
                    self._idle(state, WAITING)
                return
            except SandboxUnavailable as err:
                self._end(state, "Failed", "SandboxUnavailable", str(err))
                return
            content, stop = await self._after_call(block, given, outcome.content,
                                                   outcome.is_error)  # fmt: skip
            self.log.append(
                "agent.tool_result",
                tool_use_id=block["id"],
                content=content,
                is_error=outcome.is_error,
                **extra,
            )
            self.say(f"   {brief(outcome.content)}")
            if stop is not None:
                self._end(self._caught_up(), "Failed", "StoppedByHook", stop)
                return

    def _input(self, block: Obj) -> Any:
        """A call's input as BeforeToolCall hooks left it (the model's own when none
        rewrote it)."""
        rewritten = self._caught_up().inputs.get(block["id"])
        return rewritten if rewritten is not None else block.get("input", {})

    async def _after_call(
        self, block: Obj, given: Any, content: str, is_error: bool
    ) -> tuple[str, str | None]:
        """The result as the model reads it (with AfterToolCall hooks' notes, and a word when
        its input was rewritten) and, when a hook stops the session, why."""
        answers: list[Obj] = []
        if self.governance is not None:
            variables = {"tool": block["name"], "input": given,
                         "result": {"content": content, "isError": is_error}}  # fmt: skip
            answers = await self.hooks.run(await self.governance(), HookPoint.AFTER_TOOL_CALL,
                                           block["id"], variables, block["name"])  # fmt: skip
        rewrote = self._caught_up().rewritten_by.get(block["id"])
        if rewrote:
            content = f"[input rewritten by {rewrote}: {brief(given, 400)}]\n{content}"
        for answer in answers:
            if answer.get("note"):
                content += f"\n[{_by(answer)}] {answer['note']}"
        refused = refusal(answers)
        if refused is None:
            return content, None
        why = refused["message"] or "no reason given"
        return content, f"{_by(refused)} stopped the session after call {block['id']}: {why}"

    async def _before_delivery(self, state: State) -> State | None:
        """Run BeforeDelivery hooks on a finished answer: None to deliver it, or the state
        after the work was sent back (or the session ended, out of rounds)."""
        if self.governance is None:
            return None
        governance = await self.governance()
        key = f"delivery-{state.turns}"
        answers = await self.hooks.run(governance, HookPoint.BEFORE_DELIVERY, key,
                                       {"result": final_text(state)})  # fmt: skip
        refused = refusal(answers)
        if refused is None:
            return None
        rounds = governance.max_delivery_rounds
        if state.sent_back >= rounds:
            return self._end(
                state, "Failed", "DeliveryRefused",
                f"{_by(refused)} still refused the result after {rounds} rounds: "
                f"{brief(refused['message'], 1000)}",
            )  # fmt: skip
        content = (
            f"Your result was sent back by {_by(refused)} (round {state.sent_back + 1} of at "
            f"most {rounds}); fix this and finish again:\n{refused['message']}"
        )
        self.log.append("user.hook_feedback", key=key, content=content)
        self.say(content)
        return self._caught_up()

    async def _at_end(self, state: State) -> None:
        """TaskEnd hooks: notices of how the session ended (answers change nothing)."""
        if self.governance is None or state.outcome is None:
            return
        governance = await self.governance()
        outcome = {"phase": state.outcome.get("outcome"), "reason": state.outcome.get("reason"),
                   "message": state.outcome.get("message")}  # fmt: skip
        await self.hooks.run(governance, HookPoint.TASK_END, "end",
                          {"outcome": outcome, "result": final_text(state)})  # fmt: skip


def _by(answer: Obj) -> str:
    return f"Policy {answer['policy']}, hook {answer['hook']}"


def _stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
