"""Session events as people read them in ``cadre logs`` (pure): one or a few lines each, the
timing spans left out (``-o jsonl`` prints every event as it is)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from cadre.harness.permissions import where

Event = dict[str, Any]
_QUIET = ("span.model_request_start", "span.model_request_end", "span.compaction_start")
_COMPACTION_REASONS = {
    "threshold": "the context reached its compaction threshold",
    "window": "an answer reached the context window",
    "prompt_too_long": "the API found the prompt too long",
    "overflow": "the conversation outgrew the context window",
}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "\n".join(parts)


def _brief(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(event: Event) -> str | None:
    """The line(s) for one event, or None for one not worth reading."""
    kind = str(event.get("type", ""))
    if kind in _QUIET:
        return None
    stamp = (
        datetime.fromtimestamp(float(event["time"]), UTC).strftime("%H:%M:%S")
        if "time" in event
        else "--:--:--"
    )
    head = f"{event.get('seq', '?'):>5} {stamp} "
    if kind == "session.created":
        body = f"session of {event.get('agent')} on {event.get('model')} for {event.get('task')}"
    elif kind == "user.message":
        body = "user: " + _brief(_text(event.get("content")), 400)
    elif kind == "agent.message":
        said = _text(event.get("content"))
        body = "agent: " + (_brief(said, 400) if said else "(tool calls)")
        compaction = [b for b in event.get("content") or [] if b.get("type") == "compaction"]
        if compaction:
            body = (
                "agent: [compaction summary] "
                + _brief(compaction[0].get("content"), 300)
                + ("\n" + " " * len(head) + body if said else "")
            )
    elif kind == "agent.tool_use":
        body = f"-> {event.get('name')} {_brief(event.get('input', {}))}"
    elif kind == "agent.tool_result":
        mark = "error " if event.get("is_error") else ""
        body = f"<- {mark}{_brief(event.get('content', ''))}"
    elif kind == "user.review":
        body = ("accepted" if event.get("accepted") else "changes requested") + (
            f" by {event['reviewer']}" if event.get("reviewer") else ""
        )
    elif kind == "session.status_idle":
        body = f"idle: {event.get('reason')}"
    elif kind == "session.status_terminated":
        body = f"{event.get('outcome')}: {event.get('reason')}" + (
            f": {event['message']}" if event.get("message") else ""
        )
    elif kind == "session.lesson":
        body = "lesson: " + _brief(event.get("text", ""), 400)
    elif kind == "log.damaged":
        body = f"DAMAGED LOG: {event.get('message')}"
    elif kind == "session.compacted":
        usage = event.get("usage") or {}
        spent = sum(int(v or 0) for v in usage.values())
        why = _COMPACTION_REASONS.get(str(event.get("reason")), str(event.get("reason")))
        body = f"compacted ({event.get('path')}-side, {spent} tokens): {why}"
        if event.get("path") == "client":
            body += f"; {event.get('cut')} messages summarised: " + _brief(
                event.get("summary", ""), 300
            )
    elif kind == "span.model_request_error":
        body = f"model call failed ({event.get('reason')}): {_brief(event.get('message', ''))}"
    elif kind == "session.resumed":
        body = f"resumed after event {event.get('from_seq')}"
    elif kind == "agent.tool_decision":
        decided_by = where(str(event.get("policy") or ""), str(event.get("rule") or ""))
        body = f"policy: {event.get('decision')} {event.get('tool_use_id')} ({decided_by})"
    elif kind == "user.tool_confirmation":
        verdict = "approved" if event.get("approved") else "rejected"
        body = f"{verdict} {event.get('tool_use_id')} by {event.get('by')}" + (
            f": {_brief(event['reason'])}" if event.get("reason") else ""
        )
    elif kind == "agent.hook":
        verdict = "yes" if event.get("allowed") else "no"
        hook = f"{event.get('policy')}/{event.get('hook')} ({event.get('point')})"
        why = f": {_brief(event['message'])}" if event.get("message") else ""
        body = f"hook {hook}: {verdict}{why}"
    elif kind == "user.hook_feedback":
        body = "sent back: " + _brief(event.get("content", ""), 400)
    else:
        body = kind
    return head + body
