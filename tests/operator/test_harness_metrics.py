"""A harness's live metrics in the local cluster, read as Prometheus would through the API
server's pod proxy: tokens and cost are counted as each model response arrives, while the Task
still runs (here: paused on a tool call a Policy asks about), not when it ends; tool calls by
tool and outcome; model call durations under the OpenTelemetry GenAI names."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

from cadre.api.names import HARNESS_EVENTS_PORT
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Http, Served
from tests.operator.conftest import CADRE, METRICS_PORT, NS, create_agent, create_task, ended

SCENARIO = {"agents": {"engineer": [
    {"text": "Writing it.", "tool_uses": [
        {"name": "write", "input": {"path": "a.txt", "content": "a\n"}}]},
    {"text": "Checking it.", "tool_uses": [{"name": "bash", "input": {"command": "cat a.txt"}}]},
    {"text": "Done."},
]}}  # fmt: skip


def _metrics(http: Http) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    pod = f"harness-engineer-0:{HARNESS_EVENTS_PORT}"
    response = http("GET", f"/api/v1/namespaces/{NS}/pods/{pod}/proxy/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _operator_metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    with urllib.request.urlopen(url, timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return sum(v for (n, found), v in samples.items()
               if n == name and labels.items() <= dict(found).items())  # fmt: skip


async def test_tokens_cost_and_tool_calls_are_counted_live(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory
) -> None:
    http = cluster.http
    url, _ = await scripted(SCENARIO)
    ask = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Policy", "metadata": {"name": "ask"},
           "spec": {"toolRules": [{"tools": ["bash"], "decision": "Ask"}]}}  # fmt: skip
    assert http("POST", f"{CADRE}/policies", ask).ok
    create_agent(http, url)
    create_task(http, "live", "Write a.txt.")

    def waiting() -> dict[str, Any] | None:
        status = http("GET", f"{CADRE}/tasks/live").json().get("status") or {}
        return status if status.get("pendingToolCalls") else None

    status = await until(waiting)
    who = {"namespace": NS, "agent": "engineer", "model": "claude-sonnet-4-6"}
    live = _metrics(http)
    # Two model calls answered, the Task not ended: their tokens and cost are already there.
    assert _value(live, "cadre_model_tokens_total", kind="output", **who) == (
        status["usage"]["outputTokens"])  # fmt: skip
    assert _value(live, "cadre_model_tokens_total", kind="output", **who) > 0
    assert _value(live, "cadre_model_cost_usd_total", **who) > 0
    assert _value(live, "cadre_tool_calls_total", tool="write", outcome="ok") == 1
    assert _value(live, "cadre_tool_calls_total", tool="bash") == 0
    assert _value(live, "gen_ai_client_operation_duration_seconds_count",
                  gen_ai_provider_name="anthropic") == 2  # fmt: skip
    assert _value(live, "gen_ai_client_token_usage_count", gen_ai_token_type="input") == 2
    assert _value(live, "cadre_build_info", component="harness") == 1
    # The session waits for a person: counted as such, and each call's first token was timed.
    assert _value(live, "cadre_sessions", state="idle", reason="AwaitingToolApproval") == 1
    assert _value(live, "cadre_sessions", state="running") == 0
    assert _value(live, "cadre_model_time_to_first_token_seconds_count", **who) == 2
    # The operator counts the live sandbox the paused session holds.
    sandboxes = await until(lambda: _value(_operator_metrics(), "cadre_sandboxes",
                                           agent="engineer") or None)  # fmt: skip
    assert sandboxes == 1

    ((call, _),) = status["pendingToolCalls"].items()
    answer = {"spec": {"toolApprovals": {call: {"decision": "Approved"}}}}
    assert http("PATCH", f"{CADRE}/tasks/live", answer,
                content_type="application/merge-patch+json").ok  # fmt: skip
    done = await until(lambda: ended(http, "live"), within=90)
    assert done["status"]["phase"] == "Succeeded"
    final = await until(lambda: (m := _metrics(http)) and _value(
        m, "cadre_tool_calls_total", tool="bash", outcome="ok") == 1 and m)  # fmt: skip
    assert _value(final, "gen_ai_client_operation_duration_seconds_count") >= 3
    ended_metrics = await until(lambda: (m := _metrics(http)) and _value(m, "cadre_sessions") == 0
                                and m)  # fmt: skip
    assert _value(ended_metrics, "cadre_limit_hits_total") == 0
    await until(lambda: _value(_operator_metrics(), "cadre_sandboxes", agent="engineer") == 0)
