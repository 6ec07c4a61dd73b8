"""The CLI's pure pieces: the Task `run` creates, the tree a Task heads, which harness lines
are about it, how events read, and when a verdict may be given."""

from __future__ import annotations

from typing import Any

import click
import pytest
from cadre.cli.approval import NotAwaitingApprovalError, approval_patch, check_awaiting
from cadre.cli.commands import build_task
from cadre.cli.eventtext import describe
from cadre.cli.follow import about, tree_of


def task(name: str, parent: str | None = None, **status: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"assignee": {"agent": "a"}, "prompt": "p"}
    if parent:
        spec["parentRef"] = {"name": parent}
    return {"metadata": {"name": name}, "spec": spec, "status": status}


def test_build_task_names_or_generates_and_refuses_ambiguity() -> None:
    assert build_task("Do it.", "engineer", None, "x")["metadata"] == {"name": "x"}
    generated = build_task("Do it.", None, "platform", None)
    assert generated["metadata"] == {"generateName": "run-"}
    assert generated["spec"] == {"assignee": {"team": "platform"}, "prompt": "Do it."}
    with pytest.raises(click.UsageError):
        build_task("Do it.", "a", "t", None)
    with pytest.raises(click.UsageError):
        build_task("Do it.", None, None, None)
    with pytest.raises(click.UsageError):
        build_task("  ", "a", None, None)


def test_tree_of_collects_every_level_and_nothing_else() -> None:
    tasks = [task("root"), task("a", "root"), task("b", "a"), task("c", "b"), task("other"),
             task("d", "other")]  # fmt: skip
    assert [t["metadata"]["name"] for t in tree_of(tasks, "root")] == ["root", "a", "b", "c"]
    assert tree_of(tasks, "missing") == []


def test_about_matches_namespace_and_task() -> None:
    names = {"root", "a"}
    assert about("[default/a] engineer: hello", "default", names)
    assert not about("[other/a] engineer: hello", "default", names)
    assert not about("[default/zzz] engineer: hello", "default", names)
    assert not about("no prefix at all", "default", names)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "user.message", "content": "Write it."}, "user: Write it."),
        ({"type": "agent.message", "content": [{"type": "text", "text": "On it."}]},
         "agent: On it."),
        ({"type": "agent.tool_use", "name": "bash", "input": {"command": "ls"}},
         '-> bash {"command": "ls"}'),
        ({"type": "agent.tool_result", "content": "boom", "is_error": True}, "<- error boom"),
        ({"type": "user.review", "accepted": False, "reviewer": "lead"},
         "changes requested by lead"),
        ({"type": "session.status_terminated", "outcome": "Failed", "reason": "MaxTurns",
          "message": "40 turns"}, "Failed: MaxTurns: 40 turns"),
        ({"type": "session.compacted", "path": "client", "reason": "threshold", "cut": 9,
          "summary": "Tests pass.", "usage": {"input_tokens": 5, "output_tokens": 7}},
         "compacted (client-side, 12 tokens): the context reached its compaction threshold; "
         "9 messages summarised: Tests pass."),
        ({"type": "session.compacted", "path": "server", "reason": "threshold", "usage": {}},
         "compacted (server-side, 0 tokens): the context reached its compaction threshold"),
        ({"type": "agent.message", "content": [{"type": "compaction", "content": "So far."}]},
         "agent: [compaction summary] So far."),
        ({"type": "span.model_request_error", "reason": "ModelOverloaded", "message": "529"},
         "model call failed (ModelOverloaded): 529"),
        ({"type": "agent.tool_decision", "tool_use_id": "t1", "decision": "Ask", "policy": "",
          "rule": "mcpDefault"}, "policy: Ask t1 (the default mcpDefault)"),
        ({"type": "user.tool_confirmation", "tool_use_id": "t1", "approved": False,
          "by": "alice", "reason": "not now"}, "rejected t1 by alice: not now"),
        ({"type": "agent.hook", "policy": "p", "hook": "tests", "point": "BeforeDelivery",
          "allowed": False, "message": "FAILED"}, "hook p/tests (BeforeDelivery): no: FAILED"),
        ({"type": "user.hook_feedback", "content": "fix it"}, "sent back: fix it"),
    ],
)  # fmt: skip
def test_events_read_as_one_line(event: dict[str, Any], expected: str) -> None:
    line = describe({"seq": 7, "time": 0, **event})
    assert line is not None
    assert line.endswith(expected)
    assert line.split()[0] == "7"


def test_timing_spans_are_left_out() -> None:
    assert describe({"seq": 1, "time": 0, "type": "span.model_request_start"}) is None


def test_a_verdict_needs_a_task_that_waits_for_one() -> None:
    gated = task("g", phase="InReview")
    gated["spec"]["review"] = {"humanApproval": True}
    check_awaiting(gated)
    with pytest.raises(NotAwaitingApprovalError, match="does not ask for human approval"):
        check_awaiting(task("u", phase="InReview"))
    gated["status"]["phase"] = "Failed"
    with pytest.raises(NotAwaitingApprovalError, match="already ended Failed"):
        check_awaiting(gated)
    assert approval_patch(False, "More tests.") == {
        "approval": {"decision": "Rejected", "feedback": "More tests."}}  # fmt: skip
    assert approval_patch(True, "")["approval"]["decision"] == "Approved"
