"""Where a delegated Task's delivery stands in review, read from the Task object (pure; the
operator and the harness both decide from it, so they share one reading)."""

from __future__ import annotations

from cadre.api.types import Obj


def delivery_waiting(task: Obj) -> int | None:
    """The delivery that waits for a verdict (InReview, no verdict on it yet), if one does."""
    status = task.get("status") or {}
    review = status.get("review") or {}
    deliveries = int(review.get("deliveries") or 0)
    if status.get("phase") == "InReview" and int(review.get("round") or 0) < deliveries:
        return deliveries
    return None


def awaiting_screening(task: Obj) -> int | None:
    """The waiting delivery the Team's reviewer (``spec.review.reviewer``) has not passed yet."""
    delivery = delivery_waiting(task)
    if delivery is None or not (task["spec"].get("review") or {}).get("reviewer"):
        return None
    screened = int(((task.get("status") or {}).get("review") or {}).get("screened") or 0)
    return delivery if screened < delivery else None


def awaits_requester(task: Obj) -> bool:
    """A waiting delivery the requester may judge: past the Team's reviewer, if any."""
    return delivery_waiting(task) is not None and awaiting_screening(task) is None
