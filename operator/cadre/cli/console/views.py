"""What each console page shows, computed from a store snapshot (pure: no I/O, ``now`` given).

Spend is the Tasks' own ``status.usage.costUSD``, which harnesses write as each model response
arrives: a running session's spend shows while it runs. It is counted on the day the Task
ended (today, while it runs), by the Agent that worked it, the Team whose tree it belongs to
and its namespace."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal

from cadre.api.names import TEAM_LABEL
from cadre.api.task import FINAL_PHASES, parent_of
from cadre.api.types import Obj
from cadre.cli.console.store import Snapshot
from cadre.cli.tree import Row, task_tree, total


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def _cost(task: Obj) -> Decimal:
    try:
        return Decimal(str((_status(task).get("usage") or {}).get("costUSD") or "0"))
    except ArithmeticError:
        return Decimal(0)


def _condition(obj: Obj, kind: str) -> Obj:
    found: Obj = next((c for c in _status(obj).get("conditions") or [] if c.get("type") == kind),
                      {})  # fmt: skip
    return found


def team_of(task: Obj) -> str:
    """The Team whose tree the Task belongs to ("" for an Agent's own Task)."""
    return str(
        (task["spec"].get("assignee") or {}).get("team")
        or (task["metadata"].get("labels") or {}).get(TEAM_LABEL)
        or ""
    )


def agent_of(task: Obj) -> str:
    return str(_status(task).get("agent") or (task["spec"].get("assignee") or {}).get("agent")
               or "")  # fmt: skip


def spend_day(task: Obj, now: datetime) -> date | None:
    """The day a Task's spend counts on: the day it ended, today while it runs."""
    status = _status(task)
    if not status.get("startTime") and not _cost(task):
        return None
    if status.get("phase") in FINAL_PHASES:
        ended = parse_time(status.get("completionTime"))
        return (ended or now).date()
    return now.date()


@dataclass(frozen=True)
class AgentCard:
    namespace: str
    name: str
    ready: bool
    reason: str
    model: str
    active: int
    queued: int
    spend_today: Decimal
    memory_entries: int
    delegates_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class TeamCard:
    namespace: str
    name: str
    ready: bool
    lead: AgentCard | None
    lead_name: str
    members: tuple[AgentCard | str, ...]
    """A member's card, or its name when no such Agent exists."""


@dataclass(frozen=True)
class Org:
    teams: list[TeamCard]
    solo: list[AgentCard]
    """Agents in no Team."""
    agents: int
    ready: int
    active: int
    queued: int
    spend_today: Decimal


def _agent_card(agent: Obj, spend: dict[tuple[str, str], Decimal]) -> AgentCard:
    meta, status = agent["metadata"], _status(agent)
    ready = _condition(agent, "Ready")
    key = (str(meta.get("namespace") or ""), str(meta["name"]))
    return AgentCard(
        namespace=key[0], name=key[1], ready=ready.get("status") == "True",
        reason=str(ready.get("reason") or ("" if ready else "NotObserved")),
        model=str(agent["spec"].get("model") or ""),
        active=int(status.get("activeTasks") or 0), queued=int(status.get("queuedTasks") or 0),
        spend_today=spend.get(key, Decimal(0)),
        memory_entries=int(status.get("memoryEntries") or 0),
    )  # fmt: skip


def organization(snap: Snapshot, now: datetime) -> Org:
    today = now.date()
    spend: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for task in snap.tasks:
        if spend_day(task, now) == today:
            spend[(str(task["metadata"].get("namespace") or ""), agent_of(task))] += _cost(task)
    cards = {(c.namespace, c.name): c for c in (_agent_card(a, spend) for a in snap.agents)}
    placed: set[tuple[str, str]] = set()
    teams = []
    for team in sorted(snap.teams, key=lambda t: (t["metadata"].get("namespace") or "",
                                                  t["metadata"]["name"])):  # fmt: skip
        ns = str(team["metadata"].get("namespace") or "")
        spec = team["spec"]
        lead: AgentCard | None = None
        members: list[AgentCard | str] = []
        for member in spec.get("members") or []:
            card = cards.get((ns, member["agent"]))
            if card is not None:
                card = replace(card, delegates_to=tuple(member.get("delegatesTo") or ()))
            placed.add((ns, member["agent"]))
            if member["agent"] == spec["lead"]:
                lead = card  # the lead is a member too: shown at the top, not twice
            else:
                members.append(card or member["agent"])
        teams.append(TeamCard(
            namespace=ns, name=team["metadata"]["name"],
            ready=_condition(team, "Ready").get("status") == "True",
            lead=lead, lead_name=spec["lead"], members=tuple(members),
        ))  # fmt: skip
    solo = sorted((c for k, c in cards.items() if k not in placed),
                  key=lambda c: (c.namespace, c.name))  # fmt: skip
    every = list(cards.values())
    return Org(
        teams=teams, solo=solo, agents=len(every), ready=sum(c.ready for c in every),
        active=sum(c.active for c in every), queued=sum(c.queued for c in every),
        spend_today=sum((c.spend_today for c in every), Decimal(0)),
    )  # fmt: skip


@dataclass(frozen=True)
class Tree:
    namespace: str
    root: str
    rows: list[Row]
    total: Row
    live: bool
    """Some Task of the tree has not ended."""


def trees(snap: Snapshot, now: datetime, limit: int = 100) -> list[Tree]:
    """The delegation trees, the unfinished ones first, then newest first; at most ``limit``."""
    by_ns: dict[str, list[Obj]] = defaultdict(list)
    for task in snap.tasks:
        by_ns[str(task["metadata"].get("namespace") or "")].append(task)
    found = []
    for ns, tasks in by_ns.items():
        names = {t["metadata"]["name"] for t in tasks}
        for task in tasks:
            parent = parent_of(task)
            if parent and parent in names:
                continue
            rows = task_tree(tasks, task["metadata"]["name"], now)
            live = any(r.phase not in FINAL_PHASES for r in rows)
            created = task["metadata"].get("creationTimestamp") or ""
            found.append((not live, created, Tree(ns, rows[0].name, rows, total(rows), live)))
    found.sort(key=lambda f: (f[0], _descending(f[1]), f[2].namespace, f[2].root))
    return [f[2] for f in found[:limit]]


def _descending(stamp: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in stamp)


@dataclass(frozen=True)
class Waiting:
    """Something only a person can move on: a deliverable or a tool call."""

    namespace: str
    task: str
    agent: str
    kind: str
    """"deliverable" or "tool"."""
    what: str
    since: str
    call: str = ""
    detail: str = ""
    deadline: str = ""


def waiting(snap: Snapshot) -> list[Waiting]:
    """Deliverables awaiting approval (``spec.review.humanApproval``, phase InReview, no
    ``spec.approval`` yet) and tool calls a Policy asked a person about and nobody has answered
    yet; oldest first."""
    found = []
    for task in snap.tasks:
        meta, spec, status = task["metadata"], task["spec"], _status(task)
        ns, name = str(meta.get("namespace") or ""), str(meta["name"])
        asked = (spec.get("review") or {}).get("humanApproval") and not spec.get("approval")
        if asked and status.get("phase") == "InReview":  # answered: the harness acts on it
            result = status.get("result") or {}
            found.append(Waiting(
                namespace=ns, task=name, agent=agent_of(task), kind="deliverable",
                what=str(result.get("summary") or "(no summary)"),
                since=str(_condition(task, "Succeeded").get("lastTransitionTime") or ""),
                detail=", ".join(f["path"] for f in result.get("files") or [] if "path" in f),
            ))  # fmt: skip
        answered = spec.get("toolApprovals") or {}
        for call, pending in sorted((status.get("pendingToolCalls") or {}).items()):
            if call in answered:
                continue
            why = " ".join(x for x in (pending.get("policy"), pending.get("rule")) if x)
            found.append(Waiting(
                namespace=ns, task=name, agent=agent_of(task), kind="tool",
                what=f"{pending.get('tool')}: {pending.get('input') or ''}",
                since=str(pending.get("since") or ""), call=call,
                detail=(pending.get("message") or "") + (f" (Policy {why})" if why else ""),
                deadline=str(pending.get("deadline") or ""),
            ))  # fmt: skip
    return sorted(found, key=lambda w: (w.since, w.namespace, w.task, w.call))


@dataclass(frozen=True)
class SpendTable:
    by: str
    days: list[date]
    rows: list[tuple[str, list[Decimal], Decimal]]
    """Label, spend per day, total over the days."""
    totals: list[Decimal] = field(default_factory=list)


def spend(snap: Snapshot, now: datetime, days: int = 14) -> list[SpendTable]:
    """Spend per day over the last ``days`` days, by Agent, by Team and by namespace."""
    last = [now.date() - timedelta(days=d) for d in range(days - 1, -1, -1)]
    index = {d: i for i, d in enumerate(last)}
    groups: dict[str, dict[str, list[Decimal]]] = {"Agent": {}, "Team": {}, "namespace": {}}
    for task in snap.tasks:
        day = spend_day(task, now)
        if day not in index:
            continue
        ns = str(task["metadata"].get("namespace") or "")
        labels = {"Agent": f"{ns}/{agent_of(task) or '-'}",
                  "Team": f"{ns}/{team_of(task) or '(no team)'}", "namespace": ns}  # fmt: skip
        for by, label in labels.items():
            row = groups[by].setdefault(label, [Decimal(0)] * days)
            row[index[day]] += _cost(task)
    tables = []
    for by, rows in groups.items():
        ordered = sorted(rows.items(), key=lambda r: (-sum(r[1]), r[0]))
        totals = [sum((r[i] for r in rows.values()), Decimal(0)) for i in range(days)]
        tables.append(SpendTable(by, last, [(label, row, sum(row, Decimal(0)))
                                            for label, row in ordered], totals))  # fmt: skip
    return tables


def agent_tasks(snap: Snapshot, namespace: str, agent: str) -> list[Obj]:
    """The Agent's Tasks, newest first."""
    mine = [t for t in snap.tasks if (t["metadata"].get("namespace") or "") == namespace
            and agent_of(t) == agent]  # fmt: skip
    return sorted(mine, key=lambda t: _descending(t["metadata"].get("creationTimestamp") or ""))


def find(objects: list[Obj], namespace: str, name: str) -> Obj | None:
    return next((o for o in objects if o["metadata"]["name"] == name
                 and (o["metadata"].get("namespace") or "") == namespace), None)  # fmt: skip
