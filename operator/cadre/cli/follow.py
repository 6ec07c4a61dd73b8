"""Following a Task live, as ``cadre run`` and ``cadre demo`` do: its tree's phase changes
from the API server, and the lines the harnesses write about its sessions, read from their
pods' logs through the API server (what ``kubectl logs -f`` does)."""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from cadre.api.names import harness_pod_name
from cadre.api.task import FINAL_PHASES, parent_of
from cadre.api.types import Obj
from cadre.cli import highlights, podhealth
from cadre.cli.kube import Kube

# How long the rest of the tree may take to end after its root has (a child whose delivery was
# accepted ends when its harness next looks at it, within seconds).
SETTLE_SECONDS = 15.0
_LINE = re.compile(r"^\[(?P<namespace>[^/\]]+)/(?P<task>[^\]]+)\] ")


class FollowTimeoutError(click.ClickException):
    """The Task did not end in the time given (exit code 1, the message says which)."""


class LogFollower:
    """Follows each harness pod's log through the API server (``kubectl logs -f``), one thread
    per pod, lines into one queue."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.lines: queue.Queue[tuple[str, str]] = queue.Queue()
        self.following: set[str] = set()
        self.stopped = threading.Event()

    def follow(self, agent: str) -> None:
        pod = harness_pod_name(agent)
        if pod in self.following or self.kube.pod_phase(self.namespace, pod) != "Running":
            return
        self.following.add(pod)
        threading.Thread(target=self._read, args=(agent, pod), daemon=True).start()

    def _read(self, agent: str, pod: str) -> None:
        try:
            for line in self.kube.follow_log(self.namespace, pod):
                if self.stopped.is_set():
                    break
                self.lines.put((agent, line))
        except Exception as err:
            if not self.stopped.is_set():
                self.lines.put((agent, f"(log stream ended: {err})"))
        self.following.discard(pod)

    def drain(self) -> list[tuple[str, str]]:
        drained = []
        while not self.lines.empty():
            drained.append(self.lines.get())
        return drained


def tree_of(tasks: list[Obj], root: str) -> list[Obj]:
    """``root`` and every Task delegated under it, and their reviews, at any depth (pure)."""
    children: dict[str, list[Obj]] = {}
    for task in tasks:
        parent = parent_of(task)
        if parent:
            children.setdefault(parent, []).append(task)
    found = [t for t in tasks if t["metadata"]["name"] == root]
    index = 0
    while index < len(found):
        found.extend(children.get(found[index]["metadata"]["name"], []))
        index += 1
    return found


def _phase(task: Obj) -> str | None:
    return (task.get("status") or {}).get("phase")


def about(line: str, namespace: str, names: set[str]) -> bool:
    """Whether a harness log line is about one of these Tasks (pure)."""
    match = _LINE.match(line)
    return match is not None and match["namespace"] == namespace and match["task"] in names


POD_CHECK_SECONDS = 2.0
LOG_LINES = 15


def fail_on_broken_pods(kube: Kube, namespace: str, agents: set[str], tasks: set[str]) -> None:
    """Raise, naming the pod, why and its last log lines, when a harness or sandbox of the
    followed tree will not recover by waiting (crash-looping, its image unknown)."""
    for pod in kube.list_pods(namespace, "app.kubernetes.io/part-of=cadre"):
        if not podhealth.concerned(pod, agents, tasks):
            continue
        why = podhealth.why_failing(pod)
        if why is None:
            continue
        name = pod["metadata"]["name"]
        tail = kube.log_tail(namespace, name, LOG_LINES, previous=True) or kube.log_tail(
            namespace, name, LOG_LINES
        )
        shown = "\n".join(f"  {line}" for line in tail.splitlines()) or "  (no log)"
        raise click.ClickException(
            f"pod {name} is failing ({why}); its last log lines:\n{shown}\n"
            f"(kubectl -n {namespace} describe pod {name}; kubectl -n {namespace} logs {name})"
        )


def follow_task(
    kube: Kube, namespace: str, root: str, timeout: float,
    say: Callable[[str, dict[str, Any]], None], transcript: list[tuple[str, str]],
) -> Obj:  # fmt: skip
    """Print the tree's phase changes and its sessions' lines until ``root`` ends; return it.
    The harnesses followed are those of the Agents working the tree, as they appear."""
    logs = LogFollower(kube, namespace)
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    settle = 0.0
    checked = time.monotonic()

    def show(lines: list[tuple[str, str]], names: set[str]) -> None:
        for agent, line in lines:
            if about(line, namespace, names):
                transcript.append((agent, line))
                say(f"{click.style(agent.ljust(10), fg='yellow')} | {line}", {})

    try:
        while True:
            tree = tree_of(kube.list_tasks(namespace), root)
            if not tree:
                raise click.ClickException(f'Task "{root}" was deleted while followed')
            names = {t["metadata"]["name"] for t in tree}
            for agent in {(t.get("status") or {}).get("agent") for t in tree} - {None}:
                logs.follow(str(agent))
            for line in highlights.phase_changes(tree, seen):
                say(line, {"fg": "cyan"})
            show(logs.drain(), names)
            if _phase(tree[0]) in FINAL_PHASES:
                # An accepted delivery ends its child Task a moment after the parent may have
                # ended: the tree is followed until all of it is final (a short grace at most).
                settle = min(settle or time.monotonic() + SETTLE_SECONDS, deadline)
                if all(_phase(t) in FINAL_PHASES for t in tree) or time.monotonic() > settle:
                    time.sleep(0.5)  # the harnesses' last lines
                    show(logs.drain(), names)
                    return tree[0]
            if time.monotonic() - checked > POD_CHECK_SECONDS:
                checked = time.monotonic()
                agents = {str((t.get("status") or {}).get("agent")) for t in tree}
                fail_on_broken_pods(kube, namespace, agents, names)
            if time.monotonic() > deadline:
                raise FollowTimeoutError(f"Task {root} did not finish within {timeout:.0f}s")
            time.sleep(0.3)
    finally:
        logs.stopped.set()
