"""What governing a tool call costs the harness: a bash call checked against 50 rules (none
of which match until the last, the worst case: every rule is looked at), and one CEL hook
evaluated on a call (compiled once, as the harness does)."""

from __future__ import annotations

import statistics
import time
from typing import Any

from cadre.api.policy import HookPoint
from cadre.harness.hooks import evaluate_cel
from cadre.harness.permissions import Governance

from bench.results import Metric

RULES = 50
CALLS = 5_000


def _governance() -> Governance:
    rules: list[dict[str, Any]] = []
    for index in range(RULES - 1):
        if index % 2:
            paths = [f"dir{index}/*", f"*.{index}"]
            rules.append({"name": f"paths-{index}", "tools": ["read", "write"], "paths": paths,
                          "decision": "Deny"})  # fmt: skip
        else:
            rules.append({"name": f"cmd-{index}", "tools": ["bash"],
                          "commands": [f"tool{index} *", f"*--flag{index}*"],
                          "decision": "Allow"})  # fmt: skip
    rules.append({"name": "last", "tools": ["bash"], "commands": ["git push*"], "decision": "Ask"})
    hook = {"name": "no-force", "at": "BeforeToolCall", "tools": ["bash"],
            "cel": {"expression": "!input.command.contains('--force')"}}  # fmt: skip
    policy = {"metadata": {"name": "team"}, "spec": {"toolRules": rules, "hooks": [hook]}}
    return Governance.select([policy], {})


def _p50_us(run: Any) -> float:
    samples = []
    for _ in range(CALLS):
        start = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def measure() -> list[Metric]:
    governance = _governance()
    call = {"command": "git push origin main"}
    assert governance.decide("bash", call).rule == "last"
    ((_, hook),) = governance.hooks(HookPoint.BEFORE_TOOL_CALL, "bash")
    variables = {"tool": "bash", "input": call, "agent": {"name": "a", "labels": {}},
                 "task": {"namespace": "ns", "name": "t"}}  # fmt: skip
    assert evaluate_cel(hook, HookPoint.BEFORE_TOOL_CALL, variables).allowed
    rules_us = _p50_us(lambda: governance.decide("bash", call))
    cel_us = _p50_us(lambda: evaluate_cel(hook, HookPoint.BEFORE_TOOL_CALL, variables))
    return [
        Metric("policy_eval_us_p50", round(rules_us, 1), "us",
               f"median of {CALLS}: a bash call decided by the last of {RULES} rules", "<= 200"),
        Metric("policy_cel_hook_us_p50", round(cel_us, 1), "us",
               f"median of {CALLS}: one compiled CEL BeforeToolCall hook on a bash call"),
    ]  # fmt: skip


if __name__ == "__main__":
    for metric in measure():
        print(metric)
