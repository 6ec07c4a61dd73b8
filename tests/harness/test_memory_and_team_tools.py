"""The pure parts of memory (parse with clear errors, rank, budget, compaction) and of the team
tools (what counts as news, what awaits review), and how verdicts and the team's context are
read from a Task."""

from __future__ import annotations

from typing import Any

import pytest
from cadre.api.review import awaits_requester
from cadre.api.team import TeamSpec
from cadre.harness.memory import (
    Entry,
    MemoryUnreadable,
    add,
    dump,
    for_prompt,
    mark_used,
    parse,
    ranked,
    render,
)
from cadre.harness.task_status import build_final_status, verdict_of
from cadre.harness.team_tools import describe, news_of, team_context


def test_memory_round_trips_through_yaml() -> None:
    entries = [Entry("Use pytest -q.", "2026-01-01T00:00:00Z", 2, "t1")]
    assert parse(dump(entries)) == entries
    assert parse("") == []


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("- text: [unclosed", "line 1"),
        ("text: not a list", "expected a list of entries, found dict"),
        ("- created: x", "entry 0 needs a text field"),
        ("- text: ok\n- text: fine\n  uses: many", "entry 1:"),
    ],
)
def test_hand_edited_memory_that_is_wrong_is_refused_clearly(text: str, says: str) -> None:
    with pytest.raises(MemoryUnreadable, match=says):
        parse(text, "ConfigMap ns/memory-a key entries.yaml")


def test_ranking_budget_and_compaction() -> None:
    old = Entry("old but used", "2026-01-01", 5)
    new = Entry("new", "2026-02-01", 0)
    newer = Entry("newer", "2026-03-01", 0)
    assert ranked([new, old, newer]) == [old, newer, new]
    assert for_prompt([old, new], budget=len("old but used")) == [old]
    kept = add([old, new, newer], "newest", "t", "2026-04-01", max_entries=3)
    assert [e.text for e in kept] == ["old but used", "newest", "newer"]  # "new" compacted away
    again = add(kept, "newest", "t", "2026-05-01", max_entries=3)
    assert next(e for e in again if e.text == "newest").uses == 1  # the same lesson is a use
    assert add(kept, "   ", "t", "now", 3) == kept
    assert mark_used([new], [new])[0].uses == 1
    assert render([old]).endswith("- old but used")
    assert render([]) == ""


def child(name: str, phase: str, **review: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"assignee": {"agent": "engineer"}, "title": "t"},
        "status": {"phase": phase, "review": review, "result": {"summary": f"{name} result"}},
    }


def test_news_is_a_delivery_awaiting_review_or_an_end_without_one() -> None:
    delivered = child("c1", "InReview", deliveries=1, round=0)
    sent_back = child("c2", "InReview", deliveries=1, round=1)  # not picked up yet: no news
    failed = child("c3", "Failed")
    working = child("c4", "Running")
    news = news_of([delivered, sent_back, failed, working], reported=set())
    assert [key for key, _ in news] == ["c1#delivery-1", "c3#Failed"]
    assert news_of([delivered, failed], reported={"c1#delivery-1", "c3#Failed"}) == []
    assert awaits_requester(delivered)
    assert not awaits_requester(sent_back)
    assert "delivered result #1, waiting for your review_result:\nc1 result" in describe(delivered)


def test_a_delivery_reaches_the_requester_only_once_the_teams_reviewer_passed_it() -> None:
    screened = child("c1", "InReview", deliveries=2, round=1, screened=1)
    screened["spec"]["review"] = {"reviewer": "qa"}
    assert not awaits_requester(screened)
    assert news_of([screened], reported=set()) == []
    screened["status"]["review"]["screened"] = 2
    assert awaits_requester(screened)
    assert "delivered result #2, not reviewed: reviewer qa gave no verdict" in describe(screened)
    screened["status"]["review"]["passed"] = 2
    assert "delivered result #2, passed by reviewer qa" in describe(screened)


def task(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"generation": 4}, "spec": spec, "status": {}}


def test_verdicts_from_the_requester_or_a_human() -> None:
    child_task = task(parentRef={"name": "p"})
    assert verdict_of(child_task) is None
    child_task["status"]["review"] = {"decision": "ChangesRequested", "round": 2,
                                      "lastFeedback": "more", "reviewer": "lead"}  # fmt: skip
    verdict = verdict_of(child_task)
    assert verdict is not None
    assert (verdict.key, verdict.accepted, verdict.feedback, verdict.round) == (
        "round-2", False, "more", 2,
    )  # fmt: skip
    approved = verdict_of(task(approval={"decision": "Approved"}))
    assert approved is not None
    assert (approved.key, approved.accepted) == ("approved-4", True)
    rejected = verdict_of(task(approval={"decision": "Rejected", "feedback": "no"}))
    assert rejected is not None
    assert (rejected.accepted, rejected.feedback, rejected.round) == (False, "no", 0)


def test_the_team_context_names_members_and_whom_one_may_ask() -> None:
    spec = TeamSpec.model_validate(
        {"lead": "lead", "members": [{"agent": "lead", "delegatesTo": ["eng"]}, {"agent": "eng"}]}
    )
    roles = {"lead": "Plans", "eng": "Builds"}
    lead = team_context("core", spec, roles, "lead")
    assert "- eng: Builds" in lead
    assert "You may delegate to: eng." in lead
    assert "you do not delegate" in team_context("core", spec, roles, "eng")


def test_a_paused_session_keeps_succeeded_unknown_and_no_completion_time() -> None:
    status = build_final_status(
        {"outcome": "InReview", "reason": "AwaitingReview", "result": "v1"}, 1, []
    )
    assert status["phase"] == "InReview"
    assert status["conditions"][0]["status"] == "Unknown"
    assert "completionTime" not in status
    assert status["result"]["summary"] == "v1"
