"""Pods of a followed Task tree that will not get better by waiting (pure): a newcomer's
``cadre demo`` or ``cadre run`` says so within seconds, with the pod's last log lines, instead
of printing ``Pending`` until its timeout."""

from __future__ import annotations

from cadre.api.names import AGENT_LABEL, COMPONENT_LABEL, TASK_LABEL
from cadre.api.types import Obj

STUCK = ("ErrImagePull", "ImagePullBackOff", "RunContainerError", "InvalidImageName")
"""Waiting reasons no amount of waiting fixes."""
CRASHES = 2
"""Restarts after which a CrashLoopBackOff counts as failing (one can be a race at start)."""


def concerned(pod: Obj, agents: set[str], tasks: set[str]) -> bool:
    """Whether the pod is a harness of one of ``agents`` or a sandbox of one of ``tasks``."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    component = labels.get(COMPONENT_LABEL)
    if component == "harness":
        return labels.get(AGENT_LABEL) in agents
    return component == "sandbox" and labels.get(TASK_LABEL) in tasks


def why_failing(pod: Obj) -> str | None:
    """What is wrong with a pod that will not recover by itself, or None."""
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in STUCK:
            return f"{reason}: {waiting.get('message', '')}".rstrip(": ")
        restarts = int(container.get("restartCount") or 0)
        if reason == "CrashLoopBackOff" and restarts >= CRASHES:
            last = ((container.get("lastState") or {}).get("terminated") or {}).get("exitCode")
            return (
                f"CrashLoopBackOff: container {container.get('name')} exited {last}, "
                f"restarted {restarts} times"
            )
    return None
