"""A Team's reviewer: the review Task that inspects a delivery before the requester sees it
(pure builders; the handlers in ``team_handlers`` create and settle them).

A delegated Task of a Team that names ``review.reviewer`` carries ``spec.review.reviewer``.
Each of its deliveries first goes to that Agent as a review Task (``spec.reviewOf``), whose
session reads the instructions, the criteria, the result and the delivered files, and gives its
verdict with ``review_result``: changes requested reopen the delegated Task's session like a
requester's would; a pass (``status.review.screened``) lets the requester see the delivery.
"""

from __future__ import annotations

import hashlib

from cadre.api.meta import API_VERSION
from cadre.api.names import MANAGED_BY, REVIEW_OF_LABEL, TEAM_LABEL
from cadre.api.task import MAX_TASK_NAME
from cadre.api.team import TeamSpec
from cadre.api.tracing import child_annotation
from cadre.api.types import Obj

PROMPT_BUDGET = 60_000
"""Characters of a review Task's prompt (the CRD allows 65,536)."""
EXCERPT = 8_000
"""Characters of the delegated Task's own instructions quoted in the review prompt."""


def reviewer_for(team: TeamSpec, worker: str, requester: str) -> str | None:
    """The Team's reviewer for work ``worker`` does for ``requester``; None when there is none
    or it would review its own work or its own request (the requester reviews anyway)."""
    reviewer = team.review.reviewer
    return reviewer if reviewer not in (None, worker, requester) else None


def review_task_name(task: str, delivery: int) -> str:
    """Deterministic (a repeated pass creates nothing twice) and distinct per delivery."""
    digest = hashlib.sha256(task.encode()).hexdigest()[:5]
    suffix = f"-r{delivery}-{digest}"
    return f"{task[: MAX_TASK_NAME - len(suffix)].rstrip('-.')}{suffix}"


def review_prompt(task: Obj, delivery: int) -> str:
    """What the reviewer is asked: the work, its criteria, the result and its files, bounded."""
    spec, status = task["spec"], task.get("status") or {}
    result = status.get("result") or {}
    name, worker = task["metadata"]["name"], spec["assignee"].get("agent")
    instructions = spec["prompt"][:EXCERPT]
    parts = [
        f"Review delivery #{delivery} of Task {name}, worked by {worker}"
        f"{': ' + spec['title'] if spec.get('title') else ''}, before it goes to the requester.",
        f"The instructions it was given:\n{instructions}",
    ]
    if spec.get("acceptanceCriteria"):
        parts.append(f"Acceptance criteria: {spec['acceptanceCriteria']}")
    parts.append(f"Its result:\n{result.get('summary') or '(no summary)'}")
    closing = (
        "Inspect the result against the instructions and the criteria, then call review_result: "
        f"accept passes it on to the requester; request_changes with feedback sends it back to "
        f"{worker}."
    )
    room = PROMPT_BUDGET - sum(len(p) + 2 for p in parts) - len(closing) - 200
    shown, left_out = [], list(result.get("filesOmitted") or [])
    for file in result.get("files") or []:
        block = f"--- {file['path']} ---\n{file.get('content', '')}"
        if len(block) > room:
            left_out.append(f"{file['path']}: too long to quote here")
            continue
        shown.append(block)
        room -= len(block) + 1
    if shown:
        parts.append("Delivered files:\n" + "\n".join(shown))
    if left_out:
        parts.append("Not delivered:\n" + "\n".join(f"- {why}" for why in left_out)[:2000])
    parts.append(closing)
    return "\n\n".join(parts)


def build_review_task(task: Obj, delivery: int, team: str) -> Obj:
    """The review Task of one delivery: assigned to the reviewer, owned by the delegated Task
    (deleting it deletes its reviews), labelled so its reviews can be listed."""
    meta, spec = task["metadata"], task["spec"]
    title = f"review {spec.get('title') or meta['name']}"[:128]
    return {
        "apiVersion": API_VERSION,
        "kind": "Task",
        "metadata": {
            "name": review_task_name(meta["name"], delivery),
            "namespace": meta["namespace"],
            "labels": {**MANAGED_BY, TEAM_LABEL: team, REVIEW_OF_LABEL: meta["name"]},
            "annotations": child_annotation(task),
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "Task",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "assignee": {"agent": spec["review"]["reviewer"]},
            "title": title,
            "prompt": review_prompt(task, delivery),
            "reviewOf": {"task": meta["name"], "delivery": delivery},
            **({"limits": spec["limits"]} if spec.get("limits") else {}),
        },
    }
