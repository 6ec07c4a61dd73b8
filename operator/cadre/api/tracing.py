"""Trace ids for a Task tree, computed the same way by every harness and the operator (pure:
no OpenTelemetry here). One trace per tree: its id comes from the root Task's uid. Each Task
has one span of its own ("task NAME"), whose id comes from its uid; a delegated or review Task
carries its parent Task's span in the ``cadre.dev/trace-parent`` annotation (W3C traceparent),
written by the operator when it creates the Task, so the harness that works it, perhaps in
another pod, hangs its spans in the right place without asking anyone."""

from __future__ import annotations

import hashlib
import re

from cadre.api.names import TRACE_PARENT_ANNOTATION
from cadre.api.types import Obj

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def _digest(kind: str, uid: str, size: int) -> int:
    value = int.from_bytes(hashlib.sha256(f"{kind}:{uid}".encode()).digest()[:size], "big")
    return value or 1  # all-zero ids are invalid in W3C trace context


def task_span_id(uid: str) -> int:
    """The id of the Task's own span."""
    return _digest("span", uid, 8)


def root_trace_id(uid: str) -> int:
    """The trace id of the tree whose root Task has this uid."""
    return _digest("trace", uid, 16)


def traceparent(trace_id: int, span_id: int) -> str:
    return f"00-{trace_id:032x}-{span_id:016x}-01"


def trace_of(task: Obj) -> tuple[int, int | None]:
    """The Task's trace id and its parent span (None for a tree's root). A malformed
    annotation is treated as absent: the Task starts a trace of its own."""
    found = (task["metadata"].get("annotations") or {}).get(TRACE_PARENT_ANNOTATION, "")
    match = _TRACEPARENT.match(found)
    if match is None:
        return root_trace_id(str(task["metadata"]["uid"])), None
    return int(match[1], 16), int(match[2], 16)


def child_annotation(parent: Obj) -> dict[str, str]:
    """The annotation a Task created below ``parent`` carries (delegated work, a review)."""
    trace_id, _ = trace_of(parent)
    return {TRACE_PARENT_ANNOTATION: traceparent(trace_id, task_span_id(parent["metadata"]["uid"]))}
