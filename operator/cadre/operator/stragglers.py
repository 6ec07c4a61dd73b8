"""The sweep for passes cut short. kopf does not retry event handlers: a sandbox pass or a
delegation answer cut short by an API error (a 500, a 429) would wait for the Task's next
event, which may never come while its session waits. Each Agent's timer repeats the pass for
its Tasks in ``tasks_to_retry`` once they have stayed out of step for STRAGGLER_SECONDS.
(Per-Task kopf timers did the same but delayed every sandbox by their start-up; this sweep
costs a normal Task nothing.)"""

from __future__ import annotations

import logging
import time
from typing import Any

import kopf

from cadre.api import GROUP, VERSION
from cadre.api.review import awaiting_screening
from cadre.operator import apply
from cadre.operator.cache import Cache, Key
from cadre.operator.sandbox_handlers import retry_sandbox, sandbox_out_of_step
from cadre.operator.state import OperatorState
from cadre.operator.team_handlers import reconcile_delegations, retry_review, unanswered

log = logging.getLogger(__name__)

STRAGGLER_SECONDS = 3.0
"""How long a Task stays out of step before the sweep retries it (a restart of the operator,
which forgets when it first saw one, only delays a retry by this much)."""


@kopf.index(GROUP, VERSION, "tasks")
def tasks_to_retry(
    namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[Key, tuple[str, bool]] | None:
    """Tasks whose sandbox is out of step, whose delegation requests wait for an answer, or
    whose delivery waits for the Team's reviewer, under their Agent: what a pass cut short by
    an API error (or a review that ended without a verdict) may have left behind. With each
    name: whether its pass needs the whole Task (delegations, reviews), read from the API
    server, rather than the cache's view of it."""
    agent = status.get("agent")
    if not agent or namespace is None:
        return None
    whole = unanswered(dict(status)) or bool(
        awaiting_screening({"spec": dict(spec), "status": dict(status)})
    )
    if whole or sandbox_out_of_step(dict(status)):
        return {(namespace, str(agent)): (name, whole)}
    return None


def retry_stragglers(
    namespace: str, entries: list[tuple[str, bool]], cache: Cache, state: OperatorState
) -> None:
    now = time.monotonic()
    names = {name for name, _ in entries}
    for gone in [k for k in state.straggling if k[0] == namespace and k[1] not in names]:
        del state.straggling[gone]
    for name, whole in sorted(set(entries)):
        # A pass in flight right now (the event handler's) is not a straggler: only what has
        # stayed out of step for a while is retried, so a normal Task costs nothing extra.
        if now - state.straggling.setdefault((namespace, name), now) < STRAGGLER_SECONDS:
            continue
        try:
            if whole:
                task = apply.get_task(namespace, name)
                if task is not None and unanswered(task.get("status") or {}):
                    reconcile_delegations(task)
                if task is not None and awaiting_screening(task):
                    retry_review(task)
            view = cache.task(namespace, name)
            if view is not None and sandbox_out_of_step(view["status"]):
                retry_sandbox(view, cache, state)
        except Exception:  # the next sweep tries again; the Agent's readiness goes on
            log.warning("retrying Task %s/%s failed", namespace, name, exc_info=True)
