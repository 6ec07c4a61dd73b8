"""The harness's metrics as a session's events arrive (pure: events in, registry values out):
sessions by state and why they wait, review verdicts, limits hit, time to first token."""

from __future__ import annotations

from cadre.harness.metrics import HarnessMetrics, SessionLabels
from cadre.harness.pricing import Prices

WHO = {"namespace": "default", "team": "platform", "agent": "engineer"}


def _value(metrics: HarnessMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_sessions_life_is_counted_as_it_goes() -> None:
    metrics = HarnessMetrics()
    prices = Prices.of("3", "15")
    observe = metrics.observer(SessionLabels("default", "platform", "engineer", "m"), prices)
    running = {**WHO, "state": "running", "reason": ""}
    waiting = {**WHO, "state": "idle", "reason": "AwaitingToolApproval"}
    observe([{"type": "session.created", "seq": 1, "time": 1.0}])
    assert _value(metrics, "cadre_sessions", **running) == 1
    usage = {"input_tokens": 10, "output_tokens": 5}
    observe([{"type": "span.model_request_start", "turn": 1, "time": 1.0},
             {"type": "span.model_request_end", "turn": 1, "time": 2.0, "usage": usage,
              "first_token_seconds": 0.25}])  # fmt: skip
    ttft = "cadre_model_time_to_first_token_seconds_sum"
    assert _value(metrics, ttft, **WHO, model="m") == 0.25
    observe([{"type": "session.status_idle", "reason": "AwaitingToolApproval", "time": 3.0}])
    assert _value(metrics, "cadre_sessions", **running) == 0
    assert _value(metrics, "cadre_sessions", **waiting) == 1
    observe([{"type": "session.status_running", "reason": "answered", "time": 4.0},
             {"type": "user.review", "accepted": False, "round": 1, "time": 5.0},
             {"type": "user.review", "accepted": True, "round": 2, "time": 6.0}])  # fmt: skip
    assert _value(metrics, "cadre_sessions", **waiting) == 0
    assert _value(metrics, "cadre_reviews_total", **WHO, verdict="ChangesRequested") == 1
    assert _value(metrics, "cadre_reviews_total", **WHO, verdict="Accepted") == 1
    observe([{"type": "session.status_terminated", "outcome": "Failed",
              "reason": "MaxTurnsReached", "time": 7.0}])  # fmt: skip
    assert _value(metrics, "cadre_sessions", **running) == 0
    assert _value(metrics, "cadre_limit_hits_total", **WHO, reason="MaxTurnsReached") == 1


def test_a_refusal_counts_as_a_model_error_of_its_own_kind() -> None:
    metrics = HarnessMetrics()
    observe = metrics.observer(SessionLabels("default", "platform", "engineer", "m"),
                               Prices.of("3", "15"))  # fmt: skip
    observe([{"type": "span.model_request_start", "turn": 1, "time": 1.0},
             {"type": "span.model_request_end", "turn": 1, "time": 2.0, "stop_reason": "refusal",
              "usage": {"input_tokens": 3, "output_tokens": 1}},
             {"type": "span.model_request_error", "turn": 2, "time": 3.0,
              "reason": "ModelRateLimited"}])  # fmt: skip
    errors = "cadre_model_errors_total"
    assert _value(metrics, errors, **WHO, model="m", error_type="Refusal") == 1
    assert _value(metrics, errors, **WHO, model="m", error_type="ModelRateLimited") == 1


def test_an_ending_that_is_not_a_limit_is_not_counted_as_one() -> None:
    metrics = HarnessMetrics()
    prices = Prices.of("3", "15")
    observe = metrics.observer(SessionLabels("default", "platform", "engineer", "m"), prices)
    observe([{"type": "session.created", "time": 1.0},
             {"type": "session.status_terminated", "outcome": "Succeeded",
              "reason": "Completed", "time": 2.0}])  # fmt: skip
    assert _value(metrics, "cadre_limit_hits_total", **WHO, reason="Completed") == 0
