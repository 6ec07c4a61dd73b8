"""What ``cadre demo`` prints about a run: Task transitions as they happen, and the lines of
the harnesses' transcripts worth reading afterwards (pure functions)."""

from __future__ import annotations

import re

from cadre.api.task import FINAL_PHASES
from cadre.api.types import Obj

# A harness transcript line: "[namespace/task] agent: text" or "[namespace/task] agent -> tool ..."
_LINE = re.compile(r"^\[(?P<task>[^\]]+)\] (?P<rest>.*)$")
# Tool calls that move the story on (the rest are the work itself: writes, reads, runs).
_STORY_TOOLS = ("delegate", "wait_for_results", "review_result", "remember")


def phase_changes(tasks: list[Obj], seen: dict[str, str]) -> list[str]:
    """One line per Task whose phase (or delivery count) changed since ``seen``, which is
    updated in place."""
    lines = []
    ordered = sorted(
        tasks, key=lambda t: (t["metadata"].get("creationTimestamp") or "", t["metadata"]["name"])
    )
    for task in ordered:
        name = task["metadata"]["name"]
        status = task.get("status") or {}
        phase = status.get("phase") or "Pending"
        deliveries = int((status.get("review") or {}).get("deliveries") or 0)
        key = f"{phase}#{deliveries}"
        before = seen.get(name)
        if before == key:
            continue
        seen[name] = key
        assignee = task["spec"]["assignee"]
        agent = status.get("agent") or assignee.get("agent") or f"team {assignee.get('team')}"
        parent = (task["spec"].get("parentRef") or {}).get("name")
        if before is None:
            origin = f", delegated by {parent}" if parent else ""
            lines.append(f"▸ Task {name} ({agent}{origin}): {phase}")
            continue
        detail = f" (delivery #{deliveries})" if phase == "InReview" else ""
        if phase in FINAL_PHASES:
            condition: Obj = next(
                (c for c in status.get("conditions") or [] if c.get("type") == "Succeeded"), {}
            )
            detail = f" ({condition.get('reason', '')})"
        lines.append(f"▸ Task {name} ({agent}): {before.split('#')[0]} → {phase}{detail}")
    return lines


def select(transcript: list[tuple[str, str]]) -> list[str]:
    """The agents' own words, the team moves (delegations, reviews, memory) and the ends of
    sessions, from the harnesses' transcripts, in order."""
    chosen = []
    for agent, line in transcript:
        match = _LINE.match(line)
        if match is None:
            continue
        task = match["task"].rsplit("/", 1)[-1]
        rest = match["rest"]
        if (
            rest.startswith(f"{agent}: ")
            or any(
                rest.startswith(f"{agent} -> {tool} ") or rest == f"{agent} -> {tool}"
                for tool in _STORY_TOOLS
            )
            or rest.startswith(("Succeeded:", "Failed:", "Cancelled:"))
        ):
            chosen.append(f"{task}: {rest}")
    return chosen
