"""The harness's objects: least privilege, the key only here, a volume that outlives the pod,
and a roll when the Agent or its key changes. Each property its own test."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import kubernetes_validate
import pytest
from cadre.api.names import CONFIG_HASH_ANNOTATION, MODEL_BASE_URL_ENV, harness_selector
from cadre.operator.harness_builders import (
    AgentTarget,
    HarnessDefaults,
    build_harness_network_policy,
    build_harness_objects,
    build_harness_role,
    build_harness_statefulset,
)

DEFAULTS = HarnessDefaults(image="ghcr.io/cadre-dev/cadre:0.1.0")
SPEC = {
    "role": "Writes code",
    "model": "claude-sonnet-4-6",
    "apiKeySecretRef": {"name": "anthropic", "key": "api-key"},
}


def target(**changes: Any) -> AgentTarget:
    values: dict[str, Any] = {
        "namespace": "team-a",
        "name": "engineer",
        "uid": "uid-1",
        "spec": SPEC,
        "secret_version": "7",
    }
    values.update(changes)
    return AgentTarget(**values)


@pytest.fixture
def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = build_harness_statefulset(target(), DEFAULTS)["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("index", range(6))
def test_every_object_is_valid_kubernetes(index: int) -> None:
    obj = build_harness_objects(target(), DEFAULTS)[index]
    kubernetes_validate.validate(obj, "1.32", strict=True)


def test_the_role_allows_reading_agents_teams_tasks_writing_task_status_memory_and_events() -> None:
    rules = build_harness_role(target())["rules"]
    assert rules == [
        {"apiGroups": ["cadre.dev"], "resources": ["agents", "teams"], "verbs": ["get"]},
        {"apiGroups": ["cadre.dev"], "resources": ["policies"], "verbs": ["list"]},
        {"apiGroups": ["cadre.dev"], "resources": ["tasks"], "verbs": ["get", "list", "watch"]},
        {
            "apiGroups": ["cadre.dev"],
            "resources": ["tasks/status"],
            "verbs": ["get", "patch", "update"],
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["memory-engineer"],
            "verbs": ["get", "update", "patch"],
        },
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "get", "patch"]},
    ]


def test_the_role_creates_only_events_and_cannot_write_task_specs() -> None:
    rules = build_harness_role(target())["rules"]
    verbs = {(r, v) for rule in rules for r in rule["resources"] for v in rule["verbs"]}
    assert {r for r, v in verbs if v == "create"} == {"events"}
    assert not {v for _, v in verbs} & {"delete", "deletecollection", "*"}
    assert not {v for r, v in verbs if r == "tasks"} & {"patch", "update"}


def test_the_memory_config_map_starts_empty_and_is_owned_by_the_agent() -> None:
    memory = build_harness_objects(target(), DEFAULTS)[0]
    assert memory["kind"] == "ConfigMap"
    assert memory["metadata"]["name"] == "memory-engineer"
    assert memory["data"] == {"entries.yaml": "[]\n"}
    assert memory["metadata"]["ownerReferences"][0]["kind"] == "Agent"


def test_the_role_grants_nothing_on_pods_or_secrets() -> None:
    resources = {r for rule in build_harness_role(target())["rules"] for r in rule["resources"]}
    assert not resources & {"pods", "secrets", "*", "pods/exec"}


def test_the_api_key_comes_from_the_agents_secret_only(pod_spec: dict[str, Any]) -> None:
    env = pod_spec["containers"][0]["env"]
    secret_refs = [
        e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})
    ]
    assert secret_refs == [{"name": "anthropic", "key": "api-key"}]
    assert "envFrom" not in pod_spec["containers"][0]


def test_the_harness_is_told_the_endpoint_the_operator_checked(pod_spec: dict[str, Any]) -> None:
    env = {e["name"]: e.get("value") for e in pod_spec["containers"][0]["env"]}
    assert env[MODEL_BASE_URL_ENV] == ""  # the spec has no baseURL: the Anthropic API


def test_it_runs_as_its_own_service_account(pod_spec: dict[str, Any]) -> None:
    assert pod_spec["serviceAccountName"] == "harness-engineer"


def test_the_container_is_restricted(pod_spec: dict[str, Any]) -> None:
    context = pod_spec["containers"][0]["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context["readOnlyRootFilesystem"] is True


def test_user_namespaces_are_asked_for_when_the_operator_is_told_to() -> None:
    assert (
        "hostUsers" not in build_harness_statefulset(target(), DEFAULTS)["spec"]["template"]["spec"]
    )
    on = dataclasses.replace(DEFAULTS, user_namespaces=True)
    sts = build_harness_statefulset(target(), on)
    assert sts["spec"]["template"]["spec"]["hostUsers"] is False
    kubernetes_validate.validate(sts, "1.32", strict=True)


def test_the_network_policy_lets_no_pod_in_and_the_harness_out_only_where_it_works() -> None:
    policy = build_harness_network_policy(target(), DEFAULTS)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == harness_selector("engineer")
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == []  # no pod reaches the events port: sandboxes included
    egress = spec["egress"]
    assert {
        "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]
    } in egress
    sandboxes = {"app.kubernetes.io/component": "sandbox", "cadre.dev/agent": "engineer"}
    assert {"to": [{"podSelector": {"matchLabels": sandboxes}}],
            "ports": [{"protocol": "TCP", "port": 8080}]} in egress  # fmt: skip
    assert all("to" not in rule or rule["to"][0]["podSelector"]["matchLabels"] == sandboxes
               for rule in egress)  # fmt: skip
    opened = dataclasses.replace(
        DEFAULTS, model_ports=None, events_from=({"ipBlock": {"cidr": "10.0.0.1/32"}},)
    )
    spec = build_harness_network_policy(target(), opened)["spec"]
    assert spec["ingress"] == [{"from": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
                                "ports": [{"protocol": "TCP", "port": 8090}]}]  # fmt: skip
    assert {"ports": [{"protocol": "TCP"}]} in spec["egress"]  # a model endpoint on any port


def test_session_logs_live_on_a_claim_that_outlives_the_pod() -> None:
    sts = build_harness_statefulset(target(), DEFAULTS)
    assert [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]] == ["state"]
    mounts = sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert mounts == [{"name": "state", "mountPath": "/var/lib/cadre"}]
    assert sts["spec"]["template"]["spec"]["containers"][0]["command"][-2:] == [
        "--state-dir",
        "/var/lib/cadre",
    ]


@pytest.mark.parametrize(
    ("changes", "rolls"),
    [
        ({}, False),
        ({"secret_version": "8"}, True),
        ({"spec": {**SPEC, "model": "claude-opus-4-5"}}, True),
    ],
)
def test_a_change_of_spec_or_key_rolls_the_pod(changes: dict[str, Any], rolls: bool) -> None:
    def hash_of(t: AgentTarget) -> str:
        annotations: dict[str, str] = build_harness_statefulset(t, DEFAULTS)["spec"]["template"][
            "metadata"
        ]["annotations"]
        return annotations[CONFIG_HASH_ANNOTATION]

    assert (hash_of(target(**changes)) != hash_of(target())) is rolls


def test_everything_is_owned_by_the_agent() -> None:
    for obj in build_harness_objects(target(), DEFAULTS):
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
        assert obj["metadata"]["ownerReferences"][0]["kind"] == "Agent"


def test_mcp_credentials_go_only_into_the_harness_and_its_servers_ports_are_opened() -> None:
    servers = [
        {"name": "tickets", "url": "https://tickets.example:8443/mcp",
         "credential": {"secretRef": {"name": "tickets", "key": "token"}}},
        {"name": "docs", "url": "http://docs.svc/mcp"},
    ]  # fmt: skip
    agent = target(spec={**SPEC, "mcpServers": servers})
    pod = build_harness_statefulset(agent, DEFAULTS)["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["CADRE_MCP_CREDENTIAL_TICKETS"]["valueFrom"]["secretKeyRef"] == {
        "name": "tickets", "key": "token"}  # fmt: skip
    assert "CADRE_MCP_CREDENTIAL_DOCS" not in env
    assert [s["name"] for s in json.loads(env["CADRE_MCP_SERVERS"]["value"])] == ["tickets", "docs"]
    egress = build_harness_network_policy(agent, DEFAULTS)["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 8443}]} in egress


def test_traces_go_where_the_operator_says_and_the_network_policy_lets_them() -> None:
    assert not [e for e in build_harness_statefulset(target(), DEFAULTS)["spec"]["template"]
                ["spec"]["containers"][0]["env"] if e["name"].startswith("OTEL_")]  # fmt: skip
    traced = dataclasses.replace(DEFAULTS, otlp_endpoint="http://collector.observability:4318")
    container = build_harness_statefulset(target(), traced)["spec"]["template"]["spec"][
        "containers"][0]  # fmt: skip
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector.observability:4318"
    egress = build_harness_network_policy(target(), traced)["spec"]["egress"]
    assert {"ports": [{"protocol": "TCP", "port": 4318}]} in egress
