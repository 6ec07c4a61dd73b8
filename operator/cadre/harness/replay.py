"""The session log folded into the conversation so far: ``replay`` reads a log's events, in
order, through ``apply`` into a ``State`` (messages, usage, pending tool calls, pause, outcome).
Pure and deterministic: resuming a killed session rebuilds exactly what the model saw."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from cadre.api.types import Obj
from cadre.harness.context import (
    after_client_compaction,
    after_server_compaction,
    compaction_blocks,
    estimate,
)
from cadre.harness.pricing import Prices, cost
from cadre.harness.sessionlog import Event

USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)

WAITING = "WaitingForChildren"
AWAITING_REVIEW = "AwaitingReview"
AWAITING_APPROVAL = "AwaitingToolApproval"
"""Why a session is paused (``State.idle``): delegated Tasks, or a deliverable in review."""


@dataclass
class State:
    """The conversation as the log tells it."""

    messages: list[Obj] = field(default_factory=list)
    turns: int = 0
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_KEYS, 0))
    cost_usd: Decimal = Decimal(0)
    last_stop: str | None = None
    pending: list[Obj] = field(default_factory=list)
    """tool_use blocks of the last answer still without a result, in order."""
    results: dict[str, Obj] = field(default_factory=dict)
    sent: set[str] = field(default_factory=set)
    outcome: Obj | None = None
    idle: str | None = None
    """Why the session is paused (``WaitingForChildren``, ``AwaitingReview``), if it is."""
    idle_result: str = ""
    reported: set[str] = field(default_factory=set)
    """News of delegated Tasks already handed to the model (by the wait tool)."""
    verdicts: set[str] = field(default_factory=set)
    """Keys of the review verdicts applied."""
    review_round: int = 0
    deliveries: int = 0
    """Results delivered for review so far."""
    context: str | None = None
    """The context logged when the session was created."""
    lesson: str | None = None
    """The model's lesson, asked for once the session ended ("" when none could be had)."""
    started_at: float = 0.0
    prompt: str = ""
    """The Task's prompt: the first message, which a client-side compaction keeps."""
    compactions: int = 0
    compacting: Obj | None = None
    """A client-side compaction logged as started and not yet ended (``reason``, ``cut``)."""
    compacted_last: bool = False
    """The conversation was compacted and the model has not answered since."""
    recovering: bool = False
    """A compaction was forced by an overflow (the window exceeded) and no answer has come
    through whole since: a second overflow then ends the session."""
    context_tokens: int | None = None
    """Input plus output tokens of the latest answer (what the next request starts from); None
    once a client-side compaction changed the conversation."""
    added_tokens: int = 0
    """Estimated tokens added to the conversation since the latest answer."""
    model_errors: int = 0
    error_streak: int = 0
    """Model calls failed in a row (after the SDK's retries), and when the first of them was."""
    streak_started: float = 0.0
    decisions: dict[str, Obj] = field(default_factory=dict)
    """What the Policies decided for each tool call (``agent.tool_decision``), by call id."""
    confirmations: dict[str, Obj] = field(default_factory=dict)
    """A human's (or the timeout's) answer to each call that asked, by call id."""
    hooks: dict[str, Obj] = field(default_factory=dict)
    """Each hook's logged answer (``agent.hook``), by hook id (point/key/policy/hook)."""
    inputs: dict[str, Obj] = field(default_factory=dict)
    """Call inputs as BeforeToolCall hooks rewrote them, by call id."""
    rewritten_by: dict[str, str] = field(default_factory=dict)
    """Which hooks rewrote a call's input ("Policy p, hook h"), by call id."""
    sent_back: int = 0
    """Finished results BeforeDelivery hooks sent back."""
    awaiting: str = ""
    """The call the session waits on a human for, while paused ``AwaitingToolApproval``."""
    applied: int = 0
    """How many of the log's events are folded in."""

    @property
    def tokens(self) -> int:
        return sum(self.usage.values())


def _append_assistant(messages: list[Obj], content: list[Obj]) -> None:
    """A continuation (after max_tokens or pause_turn) extends the previous answer."""
    if messages and messages[-1]["role"] == "assistant":
        previous = messages[-1]["content"]
        if (
            previous
            and content
            and previous[-1].get("type") == "text"
            and content[0].get("type") == "text"
        ):
            merged = {**previous[-1], "text": previous[-1]["text"] + content[0]["text"]}
            messages[-1] = {"role": "assistant", "content": [*previous[:-1], merged, *content[1:]]}
        else:
            messages[-1] = {"role": "assistant", "content": [*previous, *content]}
    else:
        messages.append({"role": "assistant", "content": content})


def apply(state: State, event: Event, prices: Prices) -> None:
    """Fold one event into the state (the log is replayed through this, in order)."""
    kind = event["type"]
    # Informational events (a sandbox's connection through the egress proxy can come while
    # the session waits) leave the session's state as it was.
    if kind not in ("session.status_idle", "session.resumed", "span.egress"):
        state.idle = None
    if kind == "session.created":
        state.started_at = event["time"]
        state.context = event.get("context")
    elif kind == "user.message":
        state.prompt = state.prompt or event["content"]
        state.messages.append({"role": "user", "content": event["content"]})
        state.added_tokens += estimate(event["content"])
        state.last_stop = None
    elif kind == "session.status_idle":
        state.idle = event["reason"]
        state.awaiting = str(event.get("tool_use_id") or "")
        state.idle_result = event.get("result", "")
        state.deliveries += 1 if state.idle == AWAITING_REVIEW else 0
    elif kind == "user.review":
        state.verdicts.add(event["key"])
        if not event["accepted"]:
            state.review_round = max(state.review_round, int(event["round"]))
            state.messages.append({"role": "user", "content": event["content"]})
            state.added_tokens += estimate(event["content"])
            state.last_stop = None
    elif kind == "span.model_request_end":
        state.turns += 1
        measured = event["usage"]
        state.context_tokens = sum(int(measured.get(key) or 0) for key in USAGE_KEYS)
        state.added_tokens, state.compacted_last, state.error_streak = 0, False, 0
        if event.get("stop_reason") != "model_context_window_exceeded":
            state.recovering = False
        for key in USAGE_KEYS:
            state.usage[key] += int(event["usage"].get(key) or 0)
        state.cost_usd += cost(prices, event["usage"])
    elif kind == "agent.message":
        _append_assistant(state.messages, event["content"])
        if compaction_blocks(event["content"]) is not None:
            state.messages = after_server_compaction(state.messages)
        state.last_stop = event["stop_reason"]
        state.pending = [b for b in event["content"] if b.get("type") == "tool_use"]
        state.results, state.sent = {}, set()
    elif kind == "agent.tool_use":
        state.sent.add(event["tool_use_id"])
    elif kind == "agent.tool_result":
        state.results[event["tool_use_id"]] = {
            "type": "tool_result",
            "tool_use_id": event["tool_use_id"],
            "content": event["content"],
            "is_error": event["is_error"],
        }
        state.added_tokens += estimate(event["content"])
        state.reported.update(event.get("reported") or ())
        if state.pending and all(b["id"] in state.results for b in state.pending):
            ordered = [state.results[b["id"]] for b in state.pending]
            state.messages.append({"role": "user", "content": ordered})
            state.pending, state.last_stop = [], "tool_results"
    elif kind == "agent.tool_decision":
        state.decisions[event["tool_use_id"]] = {**event}
    elif kind == "agent.hook":
        state.hooks[event["id"]] = {**event}
        if event["point"] == "BeforeToolCall" and event.get("input") is not None:
            state.inputs[event["key"]] = event["input"]
            by = f"Policy {event['policy']}, hook {event['hook']}"
            previous = state.rewritten_by.get(event["key"])
            state.rewritten_by[event["key"]] = f"{previous}; {by}" if previous else by
    elif kind == "user.hook_feedback":
        state.sent_back += 1
        state.messages.append({"role": "user", "content": event["content"]})
        state.added_tokens += estimate(event["content"])
        state.last_stop = None
    elif kind == "user.tool_confirmation":
        state.confirmations[event["tool_use_id"]] = {**event}
    elif kind == "span.compaction_start":
        state.compacting = {"reason": event["reason"], "cut": event["cut"]}
    elif kind == "session.compacted":
        state.compactions += 1
        state.compacting = None
        for key in USAGE_KEYS:
            state.usage[key] += int(event["usage"].get(key) or 0)
        state.cost_usd += cost(prices, event["usage"])
        if event["path"] == "client":
            state.messages = after_client_compaction(
                state.prompt, event["summary"], state.messages, event["cut"]
            )
            state.context_tokens, state.added_tokens = None, 0
            state.compacted_last = True
            state.recovering = state.recovering or event["reason"] != "threshold"
    elif kind == "span.model_request_error":
        if state.compacting is not None and event.get("reason") == "ContextWindowExceeded":
            # The summary request itself was too long: the next one shortens tool results.
            state.compacting["too_long"] = state.compacting.get("too_long", 0) + 1
        state.model_errors += 1
        state.error_streak += 1
        if state.error_streak == 1:
            state.streak_started = event["time"]
    elif kind == "session.status_terminated":
        state.outcome = {k: v for k, v in event.items() if k not in ("seq", "type", "time")}
    elif kind == "session.lesson":
        state.lesson = event["text"]
        for key in USAGE_KEYS:
            state.usage[key] += int(event["usage"].get(key) or 0)
        state.cost_usd += cost(prices, event["usage"])
    state.applied += 1


def replay(events: list[Event], prices: Prices) -> State:
    """The state a log describes (pure: tests call it on crafted logs)."""
    state = State()
    for event in events:
        apply(state, event, prices)
    return state


def final_text(state: State) -> str:
    for message in reversed(state.messages):
        if message["role"] == "assistant":
            return "".join(b.get("text", "") for b in message["content"] if b.get("type") == "text")
    return ""
