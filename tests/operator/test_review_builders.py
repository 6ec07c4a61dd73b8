"""The Team's reviewer, pure parts: who reviews what, which delivery waits for it, and the
review Task built for it (bounded prompt, deterministic name, owned by the reviewed Task)."""

from __future__ import annotations

from typing import Any

from cadre.api.review import awaiting_screening, delivery_waiting
from cadre.api.task import MAX_TASK_NAME, Task
from cadre.api.team import TeamSpec
from cadre.operator.review import (
    PROMPT_BUDGET,
    build_review_task,
    review_task_name,
    reviewer_for,
)

TEAM = TeamSpec.model_validate({
    "lead": "lead",
    "members": [{"agent": "lead", "delegatesTo": ["engineer"]}, {"agent": "engineer"},
                {"agent": "qa"}],
    "review": {"reviewer": "qa"},
})  # fmt: skip


def delegated(**review: Any) -> dict[str, Any]:
    return {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "build-1a2b3c", "namespace": "team", "uid": "u-1"},
        "spec": {
            "assignee": {"agent": "engineer"},
            "title": "slugify",
            "prompt": "Write slug.py.",
            "acceptanceCriteria": "tests pass",
            "parentRef": {"name": "build", "uid": "u-0"},
            "review": {"maxRounds": 3, "reviewer": "qa"},
        },
        "status": {
            "phase": "InReview",
            "review": {"deliveries": 1, **review},
            "result": {
                "summary": "Done.",
                "files": [{"path": "slug.py", "sizeBytes": 4, "content": "pass"}],
                "filesOmitted": ["docs/*.md: no file matches"],
            },
        },
    }


def test_the_reviewer_never_reviews_its_own_work_or_its_own_request() -> None:
    assert reviewer_for(TEAM, "engineer", "lead") == "qa"
    assert reviewer_for(TEAM, "qa", "lead") is None
    assert reviewer_for(TEAM, "engineer", "qa") is None
    no_reviewer = TEAM.model_copy(
        update={"review": TEAM.review.model_copy(update={"reviewer": None})}
    )
    assert reviewer_for(no_reviewer, "engineer", "lead") is None


def test_a_delivery_waits_for_the_reviewer_until_it_passes_or_sends_it_back() -> None:
    task = delegated()
    assert (delivery_waiting(task), awaiting_screening(task)) == (1, 1)
    assert awaiting_screening(delegated(screened=1)) is None
    assert awaiting_screening(delegated(round=1)) is None  # sent back: no delivery waits
    running = delegated()
    running["status"]["phase"] = "Running"
    assert awaiting_screening(running) is None
    unreviewed = delegated()
    del unreviewed["spec"]["review"]["reviewer"]
    assert awaiting_screening(unreviewed) is None


def test_the_review_task_is_valid_owned_and_named_per_delivery() -> None:
    review = build_review_task(delegated(), 1, "platform")
    Task.model_validate(review)
    assert review["spec"]["assignee"] == {"agent": "qa"}
    assert review["spec"]["reviewOf"] == {"task": "build-1a2b3c", "delivery": 1}
    assert "parentRef" not in review["spec"]  # nobody reviews a review
    (owner,) = review["metadata"]["ownerReferences"]
    assert (owner["name"], owner["uid"], owner["controller"]) == ("build-1a2b3c", "u-1", True)
    labels = review["metadata"]["labels"]
    assert (labels["cadre.dev/review-of"], labels["cadre.dev/team"]) == ("build-1a2b3c", "platform")
    prompt = review["spec"]["prompt"]
    for part in ("delivery #1 of Task build-1a2b3c, worked by engineer: slugify", "Write slug.py.",
                 "Acceptance criteria: tests pass", "Done.", "--- slug.py ---\npass",
                 "- docs/*.md: no file matches", "call review_result"):  # fmt: skip
        assert part in prompt
    assert review_task_name("build-1a2b3c", 1) != review_task_name("build-1a2b3c", 2)
    long_name = "x" * MAX_TASK_NAME
    assert len(review_task_name(long_name, 10)) <= MAX_TASK_NAME


def test_the_review_prompt_stays_within_the_crd_bound_whatever_was_delivered() -> None:
    task = delegated()
    task["spec"]["prompt"] = "p" * 65536
    task["status"]["result"]["files"] = [
        {"path": f"f{i}.txt", "sizeBytes": 30000, "content": "c" * 30000} for i in range(3)
    ]
    prompt = build_review_task(task, 1, "platform")["spec"]["prompt"]
    assert len(prompt) <= PROMPT_BUDGET
    assert "--- f0.txt ---" in prompt
    assert "f2.txt: too long to quote here" in prompt
