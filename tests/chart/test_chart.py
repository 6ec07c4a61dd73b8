"""The Helm chart, with the real Helm engine (helm-python-sdk, offline): lint is clean; with
default and non-default values every object validates against Kubernetes 1.32's schemas;
values that break values.schema.json are refused naming the value; the chart's CRDs are the
generated ones; the plain manifests are up to date."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.localcluster.conftest import REPO
from tools.manifests import CHART, OUTPUT, plain_manifests, render

NON_DEFAULT: dict[str, Any] = {
    "image": {"repository": "registry.example.com/cadre", "tag": "1.2.3", "pullPolicy": "Always"},
    "sandboxImage": {"repository": "registry.example.com/sandbox", "tag": "1.2.3"},
    "imagePullSecrets": [{"name": "registry"}],
    "watchNamespaces": ["team-a", "team-b"],
    "modelEndpoints": ["https://api.anthropic.com", "https://llm-gateway.internal/anthropic"],
    "userNamespaces": True,
    "serviceAccount": {"create": True, "name": "cadre-operator", "annotations": {"a": "b"}},
    "resources": {"requests": {"cpu": "200m", "memory": "300Mi"}, "limits": {"memory": "1Gi"}},
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
    "podAnnotations": {"prometheus.io/scrape": "true"},
    "logLevel": "debug",
    "metrics": {"port": 9090, "serviceMonitor": {"enabled": True, "labels": {"release": "kp"}}},
    "harness": {"stateSize": "5Gi", "resources": {"requests": {"cpu": "100m"}}},
    "sandbox": {"limits": {"cpu": "2", "memory": "2Gi"}, "tmpSize": "1Gi",
                "releaseAfterSeconds": 30},
    "tracing": {"otlpEndpoint": "http://otel-collector.observability:4318"},
    "console": {"enabled": True, "approvals": True, "memory": False,
                "allowedHosts": ["console.example.com"],
                "ingress": {"enabled": True, "className": "nginx", "host": "console.example.com",
                            "tls": [{"hosts": ["console.example.com"], "secretName": "tls"}]}},
}  # fmt: skip


def by_kind(objects: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        found.setdefault(obj["kind"], []).append(obj)
    return found


def test_lint_is_clean() -> None:
    result = helm.lint(str(CHART))
    assert result["errors"] == []
    assert result["messages"] == []


@pytest.mark.parametrize("values", [{}, NON_DEFAULT], ids=["defaults", "non-defaults"])
def test_every_rendered_object_validates_against_the_kubernetes_schemas(
    values: dict[str, Any],
) -> None:
    objects = render(values)
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":  # the Prometheus Operator's CRDs, not Kubernetes
            assert set(obj["spec"]) == {"selector", "endpoints"}
            continue
        if obj["kind"] == "PodMonitor":
            assert set(obj["spec"]) == {"namespaceSelector", "selector", "podMetricsEndpoints"}
            continue
        kubernetes_validate.validate(obj, "1.32", strict=True)
    assert by_kind(objects)["Deployment"][0]["spec"]["strategy"] == {"type": "Recreate"}


def _rules(role: dict[str, Any]) -> set[tuple[str, str]]:
    return {(resource, verb) for rule in role["rules"] for resource in rule["resources"]
            for verb in rule["verbs"]}  # fmt: skip


def test_the_console_is_off_by_default_and_read_only_when_on() -> None:
    assert not [o for o in render() if "console" in o["metadata"]["name"]]
    kinds = by_kind(render({"console": {"enabled": True}}))
    console = next(d for d in kinds["Deployment"] if d["metadata"]["name"] == "cadre-console")
    pod = console["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["cadre", "console"]
    assert "--read-only" in container["args"]
    assert "--host=$(POD_IP)" in container["args"]
    assert pod["serviceAccountName"] == "cadre-console"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    role = next(r for r in kinds["ClusterRole"] if r["metadata"]["name"] == "cadre-console")
    # What it shows, nothing more: no write of any kind, no Secret.
    assert _rules(role) == {
        ("agents", "get"), ("agents", "list"), ("agents", "watch"), ("teams", "get"),
        ("teams", "list"), ("teams", "watch"), ("tasks", "get"), ("tasks", "list"),
        ("tasks", "watch"), ("configmaps", "get"), ("pods/proxy", "get")}  # fmt: skip
    assert "Ingress" not in kinds


def test_console_values_reach_its_objects() -> None:
    kinds = by_kind(render(NON_DEFAULT))
    console = next(d for d in kinds["Deployment"] if d["metadata"]["name"] == "cadre-console")
    args = console["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--read-only" not in args
    assert args.count("--namespace=team-a") == 1
    assert "--allowed-host=console.example.com" in args
    roles = [r for r in kinds["Role"] if r["metadata"]["name"] == "cadre-console"]
    assert {r["metadata"]["namespace"] for r in roles} == {"team-a", "team-b"}
    assert ("tasks", "patch") in _rules(roles[0])  # approvals on
    assert ("configmaps", "get") not in _rules(roles[0])  # memory off
    (ingress,) = kinds["Ingress"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["rules"][0]["host"] == "console.example.com"


def test_defaults_serve_the_whole_cluster_as_a_restricted_pod() -> None:
    kinds = by_kind(render())
    (deployment,) = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/cadre-dev/cadre:0.1.0"
    assert container["command"] == ["cadre", "operator"]
    assert not any(a.startswith("--namespace") for a in container["args"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["port"] == "liveness"
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CADRE_SANDBOX_IMAGE"] == "ghcr.io/cadre-dev/sandbox:0.1.0"
    # Liveness (and metrics) on the pod's own address, from the downward API.
    pod_ip = next(e for e in container["env"] if e["name"] == "POD_IP")
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert "--liveness=http://$(POD_IP):8081/healthz" in container["args"]
    assert "ServiceMonitor" not in kinds
    assert "Role" not in kinds
    assert {r["metadata"]["name"] for r in kinds["ClusterRole"]} == {"cadre", "cadre-discovery"}
    assert {s["metadata"]["name"] for s in kinds["Service"]} == {"cadre-metrics"}


def test_non_default_values_reach_the_objects() -> None:
    kinds = by_kind(render(NON_DEFAULT))
    deployment, _ = kinds["Deployment"]  # the operator, the console
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/cadre:1.2.3"
    assert pod["serviceAccountName"] == "cadre-operator"
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert container["args"][:2] == ["--namespace=team-a", "--namespace=team-b"]
    assert "--metrics-port=9090" in container["args"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CADRE_HARNESS_IMAGE"] == "registry.example.com/cadre:1.2.3"
    assert env["CADRE_SANDBOX_IMAGE"] == "registry.example.com/sandbox:1.2.3"
    assert json.loads(env["CADRE_SANDBOX_LIMITS"]) == {
        "cpu": "2", "memory": "2Gi", "ephemeral-storage": "1Gi"}  # fmt: skip
    assert json.loads(env["CADRE_HARNESS_REQUESTS"]) == {"cpu": "100m"}
    assert env["CADRE_HARNESS_STATE_SIZE"] == "5Gi"
    assert env["CADRE_SANDBOX_RELEASE_SECONDS"] == "30"
    assert env["CADRE_LOG_LEVEL"] == "debug"
    assert env["CADRE_USER_NAMESPACES"] == "true"
    assert env["CADRE_API_SERVER_PORTS"] == "443,6443"
    assert env["CADRE_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
    policy, console_policy = kinds["NetworkPolicy"]
    assert {p["port"] for p in policy["spec"]["ingress"][0]["ports"]} == {8081, 9090}
    assert [p["port"] for p in console_policy["spec"]["ingress"][0]["ports"]] == [8070]
    assert env["CADRE_MODEL_ENDPOINTS"] == (
        "https://api.anthropic.com,https://llm-gateway.internal/anthropic")  # fmt: skip
    # Namespaced: a Role per namespace, nothing cluster-wide but discovery.
    assert {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in kinds["Role"]} == {
        ("team-a", "cadre"), ("team-b", "cadre"),
        ("team-a", "cadre-console"), ("team-b", "cadre-console")}  # fmt: skip
    assert [r["metadata"]["name"] for r in kinds["ClusterRole"]] == ["cadre-discovery"]
    (monitor,) = kinds["ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "kp"


def test_the_operator_settings_accept_what_the_chart_renders() -> None:
    from cadre.operator.settings import from_env

    for values in ({}, NON_DEFAULT):
        deployment = by_kind(render(values))["Deployment"][0]  # the operator's
        env = {e["name"]: e["value"] for e in deployment["spec"]["template"]["spec"]
               ["containers"][0]["env"] if "value" in e}  # fmt: skip
        from_env(env)  # raises, naming the variable, if the chart and the operator disagree


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"image": {"repository": ""}}, "/image/repository"),
        ({"image": {"repository": "r", "pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
        ({"metrics": {"port": 80}}, "/metrics/port"),
        ({"sandbox": {"limits": {"memory": "lots"}}}, "/sandbox/limits/memory"),
        ({"sandbox": {"releaseAfterSeconds": -1}}, "/sandbox/releaseAfterSeconds"),
        ({"logLevel": "loud"}, "/logLevel"),
        ({"modelEndpoints": []}, "/modelEndpoints"),
        ({"modelEndpoints": ["https://a.example,https://b.example"]}, "/modelEndpoints/0"),
        ({"replicas": 2}, "replicas"),
        ({"tracing": {"otlpEndpoint": "otel:4318"}}, "/tracing/otlpEndpoint"),
        ({"console": {"ingress": {"host": "Bad_Host"}}}, "/console/ingress/host"),
        ({"console": {"approve": True}}, "approve"),
    ],
)
def test_values_that_break_the_schema_are_refused_naming_the_value(
    values: dict[str, Any], named: str
) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmError) as caught:
        chart.render(values, name="cadre", namespace="cadre-system")
    assert named in str(caught.value), str(caught.value)


def test_the_charts_crds_are_the_generated_ones() -> None:
    for crd in sorted((REPO / "crds").glob("*.yaml")):
        assert (CHART / "crds" / crd.name).read_text() == crd.read_text(), crd.name
    assert len(list((CHART / "crds").glob("*.yaml"))) == len(list((REPO / "crds").glob("*.yaml")))


def test_every_crd_fits_client_side_apply() -> None:
    """`kubectl apply` without --server-side stores the object in an annotation, at most
    262,144 bytes; keep each CRD well under it (docs/install.md says so)."""
    for crd in (CHART / "crds").glob("*.yaml"):
        size = len(json.dumps(yaml.safe_load(crd.read_text()), separators=(",", ":")))
        assert size < 262_144 // 4, (crd.name, size)


def test_the_plain_manifests_are_up_to_date() -> None:
    assert OUTPUT.read_text() == plain_manifests(), "run `make manifests` and commit the result"
