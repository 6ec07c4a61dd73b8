"""What the chart ships for watching Cadre: the Grafana dashboard and the PrometheusRules parse
as PromQL (promql-parser) and every metric they query is one the operator or a harness serves;
the PodMonitor finds harness pods by the labels the operator gives them, on their events port."""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest
from cadre.harness.metrics import HarnessMetrics
from cadre.operator.harness_builders import build_harness_statefulset
from cadre.operator.metrics import REGISTRY
from prometheus_client import CollectorRegistry

from tests.operator.test_harness_builders import DEFAULTS, target
from tools.manifests import CHART, render

ENABLED = {"metrics": {"serviceMonitor": {"enabled": True},
                       "prometheusRules": {"enabled": True, "budgetBurnUSDPerHour": 25},
                       "grafanaDashboard": {"enabled": True}}}  # fmt: skip
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum"),
             "gauge": ("",), "info": ("_info",)}  # fmt: skip
_SELECTOR = re.compile(r'VectorSelector \{\s*name: Some\(\s*"([^"]+)"')


def served_metrics() -> set[str]:
    """Every series name the operator and a harness can serve, whether or not set yet."""
    names = set()
    registries: list[CollectorRegistry] = [REGISTRY, HarnessMetrics().registry]
    for registry in registries:
        for family in registry.collect():
            names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def metrics_in(expr: str) -> set[str]:
    """The metric names an expression selects (it must parse as PromQL)."""
    tree = promql_parser.parse(expr)
    return set(_SELECTOR.findall(repr(tree)))


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in render(ENABLED) if o["kind"] == kind]


def test_every_dashboard_query_parses_and_names_a_served_metric() -> None:
    dashboard = json.loads((CHART / "dashboards" / "cadre-overview.json").read_text())
    (config,) = [c for c in by_kind("ConfigMap") if c["metadata"]["name"] == "cadre-dashboard"]
    assert json.loads(config["data"]["cadre-overview.json"]) == dashboard
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    served = served_metrics()
    queried = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for query in panel["targets"]:
            found = metrics_in(query["expr"])
            assert found, (panel["title"], query["expr"])
            assert found <= served, (panel["title"], found - served)
            queried |= found
    variable = dashboard["templating"]["list"][1]["query"]["query"]
    assert re.fullmatch(r"label_values\((\w+), namespace\)", variable)[1] in served  # type: ignore[index]
    # The figures the issue asks for are on it: spend, tokens, latency, first token, errors,
    # sessions and approvals waiting, queue depth, Tasks by phase, reviews, limits.
    for wanted in ("cadre_model_cost_usd_total", "cadre_model_tokens_total",
                   "gen_ai_client_operation_duration_seconds_bucket",
                   "cadre_model_time_to_first_token_seconds_bucket", "cadre_model_errors_total",
                   "cadre_sessions", "cadre_queue_depth", "cadre_tasks", "cadre_reviews_total",
                   "cadre_limit_hits_total"):  # fmt: skip
        assert wanted in queried, wanted


def test_every_alert_parses_names_served_metrics_and_takes_its_threshold() -> None:
    (rule,) = by_kind("PrometheusRule")
    alerts = {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}
    assert set(alerts) >= {"CadreBudgetBurn", "CadreTasksStuckInQueue", "CadreModelErrorRate",
                           "CadreToolCallWaitingForAPerson"}  # fmt: skip
    served = served_metrics()
    for name, alert in alerts.items():
        found = metrics_in(alert["expr"])
        assert found, name
        assert found <= served, (name, found - served)
    assert alerts["CadreBudgetBurn"]["expr"].endswith("> 25")


def test_the_pod_monitor_finds_harness_pods_on_their_events_port() -> None:
    (monitor,) = by_kind("PodMonitor")
    selector = monitor["spec"]["selector"]
    # The pod the operator builds for an Agent's harness, as it builds it.
    pod = build_harness_statefulset(target(), DEFAULTS)["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert selector["matchLabels"].items() <= labels.items()
    assert all(e["key"] in labels for e in selector["matchExpressions"])
    ports = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


@pytest.mark.parametrize("expr", ["sum(", "rate(cadre_tasks)"])
def test_a_broken_expression_is_caught(expr: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the parser's own message varies
        metrics_in(expr)
