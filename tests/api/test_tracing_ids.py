"""Trace ids of a Task tree (pure): the same for every harness and the operator, a root's
trace from its uid, a child's from the annotation its parent's harness never had to send."""

from __future__ import annotations

from typing import Any

from cadre.api.names import TRACE_PARENT_ANNOTATION
from cadre.api.tracing import child_annotation, root_trace_id, task_span_id, trace_of


def task(uid: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": uid, "uid": uid, "annotations": annotations or {}}}


def test_a_root_starts_its_trace_and_its_children_and_grandchildren_join_it() -> None:
    root = task("u-root")
    assert trace_of(root) == (root_trace_id("u-root"), None)
    child = task("u-child", child_annotation(root))
    assert trace_of(child) == (root_trace_id("u-root"), task_span_id("u-root"))
    grandchild = task("u-grand", child_annotation(child))
    assert trace_of(grandchild) == (root_trace_id("u-root"), task_span_id("u-child"))
    assert task_span_id("u-root") != task_span_id("u-child")
    assert 0 < task_span_id("x") < 2**64
    assert 0 < root_trace_id("x") < 2**128


def test_a_malformed_annotation_starts_a_trace_of_its_own() -> None:
    for bad in ("", "00-zz-11-01", "01-" + "a" * 32 + "-" + "b" * 16 + "-01", "garbage"):
        found = task("u-x", {TRACE_PARENT_ANNOTATION: bad})
        assert trace_of(found) == (root_trace_id("u-x"), None)
