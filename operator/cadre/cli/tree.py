"""The delegation tree of a Task, as ``cadre demo`` (and ``kubectl``-minded humans) read it:
pure functions from Task objects to rows and text."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from cadre.api.task import parent_of
from cadre.api.types import Obj

COLUMNS = ("TASK", "AGENT", "PHASE", "TURNS", "TOKENS", "COST", "DURATION", "REVIEWS")


@dataclass(frozen=True)
class Row:
    depth: int
    last: tuple[bool, ...]
    """For each level down to this row: whether that ancestor (or the row) is its parent's
    last child, which decides the tree glyphs."""
    name: str
    agent: str
    phase: str
    turns: int
    tokens: int
    cost: Decimal
    seconds: float | None
    reviews: int


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _row(task: Obj, last: tuple[bool, ...], now: datetime) -> Row:
    status = task.get("status") or {}
    usage = status.get("usage") or {}
    started, ended = _time(status.get("startTime")), _time(status.get("completionTime"))
    tokens = sum(
        int(usage.get(k) or 0)
        for k in ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheCreationInputTokens")
    )
    return Row(
        depth=len(last) - 1,
        last=last,
        name=task["metadata"]["name"],
        agent=status.get("agent") or task["spec"]["assignee"].get("agent") or "-",
        phase=status.get("phase") or "Pending",
        turns=int(usage.get("turns") or 0),
        tokens=tokens,
        cost=Decimal(str(usage.get("costUSD") or "0")),
        seconds=((ended or now) - started).total_seconds() if started else None,
        reviews=int((status.get("review") or {}).get("deliveries") or 0),
    )


def task_tree(tasks: list[Obj], root: str, now: datetime) -> list[Row]:
    """Rows for ``root`` and everything delegated under it, depth first, children in the order
    they were created. Tasks outside the tree are ignored."""
    children: dict[str, list[Obj]] = {}
    by_name = {t["metadata"]["name"]: t for t in tasks}
    for task in tasks:
        parent = parent_of(task)  # a review Task shows under the Task it reviews
        if parent:
            children.setdefault(parent, []).append(task)
    rows: list[Row] = []

    def visit(task: Obj, last: tuple[bool, ...]) -> None:
        rows.append(_row(task, last, now))
        kids = sorted(
            children.get(task["metadata"]["name"], []),
            key=lambda t: (t["metadata"].get("creationTimestamp") or "", t["metadata"]["name"]),
        )
        for index, kid in enumerate(kids):
            visit(kid, (*last, index == len(kids) - 1))

    if root in by_name:
        visit(by_name[root], (True,))
    return rows


def _indent(row: Row) -> str:
    if row.depth == 0:
        return ""
    trunk = "".join("   " if last else "│  " for last in row.last[1:-1])
    return trunk + ("└─ " if row.last[-1] else "├─ ")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def total(rows: list[Row]) -> Row:
    """The tree's sums (review Tasks included: they are in it): what its maxCostUSD caps."""
    return Row(
        depth=0, last=(True,), name="TOTAL", agent="", phase="",
        turns=sum(r.turns for r in rows), tokens=sum(r.tokens for r in rows),
        cost=sum((r.cost for r in rows), Decimal(0)),
        seconds=rows[0].seconds if rows else None, reviews=sum(r.reviews for r in rows),
    )  # fmt: skip


def render_tree(rows: list[Row]) -> str:
    """An aligned table, the tree drawn in the first column, and a total row."""
    table = [COLUMNS] + [
        (
            _indent(r) + r.name, r.agent, r.phase, str(r.turns), f"{r.tokens:,}",
            f"${r.cost:.4f}", duration(r.seconds), str(r.reviews),
        )
        for r in [*rows, total(rows)]
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )
