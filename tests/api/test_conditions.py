"""Conditions keep their transition time while their status holds, like Kubernetes' own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cadre.api.conditions import find_condition, set_condition
from cadre.api.meta import ConditionStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_a_new_condition_starts_now() -> None:
    out = set_condition([], "Ready", ConditionStatus.FALSE, "SecretNotFound", "no key", now=T0)
    assert out[0].last_transition_time == T0
    assert out[0].reason == "SecretNotFound"


def test_same_status_keeps_the_transition_time_but_updates_reason_and_message() -> None:
    first = set_condition([], "Ready", ConditionStatus.FALSE, "SecretNotFound", "no", now=T0)
    second = set_condition(first, "Ready", ConditionStatus.FALSE, "HarnessNotReady", "wait", now=T1)
    assert second[0].last_transition_time == T0
    assert second[0].reason == "HarnessNotReady"


def test_a_status_change_moves_the_transition_time() -> None:
    first = set_condition([], "Ready", ConditionStatus.FALSE, "SecretNotFound", "no", now=T0)
    second = set_condition(first, "Ready", ConditionStatus.TRUE, "HarnessReady", "", now=T1)
    assert second[0].last_transition_time == T1


def test_other_conditions_keep_their_place() -> None:
    conds = set_condition([], "Accepted", ConditionStatus.TRUE, "Assigned", "", now=T0)
    conds = set_condition(conds, "Succeeded", ConditionStatus.UNKNOWN, "Running", "", now=T0)
    conds = set_condition(
        conds, "Accepted", ConditionStatus.TRUE, "Assigned", "", now=T1, observed_generation=2
    )
    assert [c.type for c in conds] == ["Accepted", "Succeeded"]
    accepted = find_condition(conds, "Accepted")
    assert accepted is not None
    assert accepted.observed_generation == 2
    assert find_condition(conds, "Missing") is None
