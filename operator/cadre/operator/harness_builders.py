"""Pure builders of an Agent's harness: its ServiceAccount, the Role that allows only what the
harness needs, the RoleBinding, and the StatefulSet of one pod that runs ``cadre harness``.

The harness is the only holder of the Agent's API key (an environment variable from the
Agent's Secret, in this pod only); its volume keeps the session logs and the token key, so a
restarted pod resumes every session where it stopped.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cadre.api.agent import EgressMode
from cadre.api.egress import EGRESS_CA_DIR, EGRESS_ENV, PROXY_PORT, credential_env
from cadre.api.egress import ports as egress_ports
from cadre.api.meta import GROUP, owner_reference
from cadre.api.names import (
    AGENT_LABEL,
    API_KEY_ENV,
    COMPONENT_LABEL,
    CONFIG_HASH_ANNOTATION,
    HARNESS_EVENTS_PORT,
    HARNESS_STATE_DIR,
    MANAGED_BY,
    MCP_SERVERS_ENV,
    MEMORY_KEY,
    MODEL_BASE_URL_ENV,
    POD_IP_ENV,
    POD_NAMESPACE_ENV,
    harness_labels,
    harness_name,
    harness_selector,
    mcp_credential_env,
    memory_name,
)
from cadre.operator.egress_ca import egress_ca_name
from cadre.sandbox import protocol

HARNESS_UID = 10001


@dataclass(frozen=True)
class HarnessDefaults:
    image: str
    state_size: str = "1Gi"
    requests: dict[str, str] | None = None
    limits: dict[str, str] | None = None
    user_namespaces: bool = False
    """``hostUsers: false`` on the harness pod (see ``SandboxDefaults.user_namespaces``)."""
    api_server_ports: tuple[int, ...] = (443, 6443)
    """Where the harness may connect to reach the API server (NetworkPolicy ports only: the
    API server's address differs per cluster)."""
    model_ports: tuple[int, ...] | None = (443,)
    """Ports of the allowed model endpoints; None when one allows any port."""
    otlp_endpoint: str = ""
    """Where harnesses send traces (OTLP/HTTP); empty: they trace nothing."""
    events_from: tuple[dict[str, Any], ...] = ()
    """NetworkPolicy peers allowed to the events port besides the node (the API server's pod
    proxy reaches it from the node, which CNIs let through; a peer here can add, for example,
    an ``ipBlock`` for an API server outside the nodes)."""


@dataclass(frozen=True)
class AgentTarget:
    """The Agent a harness serves, as the builders need it."""

    namespace: str
    name: str
    uid: str
    spec: dict[str, Any]
    """The Agent's spec as stored (a change to it rolls the harness)."""
    secret_version: str = ""
    """The API-key Secret's resourceVersion (a new key rolls the harness)."""


def _metadata(target: AgentTarget, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": target.namespace,
        "labels": harness_labels(target.name),
        "ownerReferences": [owner_reference("Agent", target.name, target.uid)],
    }


def build_harness_service_account(target: AgentTarget) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(target, harness_name(target.name)),
    }


def build_harness_role(target: AgentTarget) -> dict[str, Any]:
    """Only what ``cadre harness`` calls: Agents and Teams (read: its teammates' roles), the
    namespace's Policies (list: its tool calls are decided by them), the
    Tasks and their status (its sessions' progress, delegation requests, verdicts on its
    children), its own memory ConfigMap, and Events. No pods, no Secrets; Events are all it can
    create."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(target, harness_name(target.name)),
        "rules": [
            {"apiGroups": [GROUP], "resources": ["agents", "teams"], "verbs": ["get"]},
            # The Policies its tool calls are decided by (read-only, its namespace's).
            {"apiGroups": [GROUP], "resources": ["policies"], "verbs": ["list"]},
            {"apiGroups": [GROUP], "resources": ["tasks"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": [GROUP],
                "resources": ["tasks/status"],
                "verbs": ["get", "patch", "update"],
            },
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": [memory_name(target.name)],
                "verbs": ["get", "update", "patch"],
            },
            # Events on its Tasks (an egress refusal), counted as client-go's recorder does.
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "get", "patch"]},
        ],
    }


def build_harness_role_binding(target: AgentTarget) -> dict[str, Any]:
    name = harness_name(target.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(target, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": target.namespace}],
    }


def config_hash(target: AgentTarget) -> str:
    """What rolls the harness when it changes: the Agent's spec and its key's Secret."""
    material = json.dumps([target.spec, target.secret_version], sort_keys=True)
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _mcp_env(target: AgentTarget) -> list[dict[str, Any]]:
    """The MCP servers the operator checked, and each credential from its Secret: the harness's
    environment is the only place they are (the sandbox pod gets none of it)."""
    servers = list(target.spec.get("mcpServers") or [])
    if not servers:
        return []
    env: list[dict[str, Any]] = [{"name": MCP_SERVERS_ENV, "value": json.dumps(servers)}]
    for server in servers:
        ref = (server.get("credential") or {}).get("secretRef")
        if ref:
            env.append({
                "name": mcp_credential_env(server["name"]),
                "valueFrom": {"secretKeyRef": {"name": ref["name"],
                                               "key": ref.get("key", "api-key")}},
            })  # fmt: skip
    return env


def _egress(target: AgentTarget) -> dict[str, Any] | None:
    """The Agent's sandbox egress when it is ``Hosts`` (the harness runs the proxy)."""
    egress = ((target.spec.get("sandbox") or {}).get("egress")) or {}
    return egress if egress.get("mode") == EgressMode.HOSTS else None


def _egress_env(target: AgentTarget) -> list[dict[str, Any]]:
    """The egress settings the operator checked, and each credential from its Secret: like
    the model key, only in the harness's environment."""
    egress = _egress(target)
    if egress is None:
        return []
    env: list[dict[str, Any]] = [{"name": EGRESS_ENV, "value": json.dumps(egress)}]
    for index, credential in enumerate(egress.get("credentials") or []):
        ref = credential["secretRef"]
        env.append({
            "name": credential_env(index),
            "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref.get("key", "api-key")}},
        })  # fmt: skip
    return env


def _mcp_ports(target: AgentTarget) -> tuple[int, ...]:
    ports = set()
    for server in target.spec.get("mcpServers") or []:
        url = urlsplit(server["url"])
        ports.add(url.port or (443 if url.scheme == "https" else 80))
    return tuple(sorted(ports))


def build_harness_statefulset(target: AgentTarget, defaults: HarnessDefaults) -> dict[str, Any]:
    name = harness_name(target.name)
    secret = target.spec["apiKeySecretRef"]
    resources: dict[str, Any] = {}
    if defaults.requests:
        resources["requests"] = defaults.requests
    if defaults.limits:
        resources["limits"] = defaults.limits
    labels = harness_labels(target.name)
    # With Hosts egress: the proxy's port, and the Agent's egress CA (its key is only here).
    proxy_ports: list[dict[str, Any]] = []
    ca_mounts: list[dict[str, Any]] = []
    ca_volumes: list[dict[str, Any]] = []
    if _egress(target) is not None:
        proxy_ports = [{"name": "egress", "containerPort": PROXY_PORT, "protocol": "TCP"}]
        ca_mounts = [{"name": "egress-ca", "mountPath": EGRESS_CA_DIR, "readOnly": True}]
        ca_volumes = [{"name": "egress-ca", "secret": {
            "secretName": egress_ca_name(target.name), "defaultMode": 0o400}}]  # fmt: skip
    container = {
        "name": "harness",
        "image": defaults.image,
        "command": ["cadre", "harness", "--agent", target.name, "--state-dir", HARNESS_STATE_DIR],
        "env": [
            {
                "name": API_KEY_ENV,
                "valueFrom": {
                    "secretKeyRef": {"name": secret["name"], "key": secret.get("key", "api-key")}
                },
            },
            {
                "name": POD_NAMESPACE_ENV,
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
            {"name": POD_IP_ENV, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            # The endpoint the operator checked against its allow-list: the harness uses this,
            # not the Agent's spec, which may have been changed to something refused since.
            {"name": MODEL_BASE_URL_ENV, "value": target.spec.get("baseURL") or ""},
            *_mcp_env(target),
            *_egress_env(target),
            *(
                [{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": defaults.otlp_endpoint}]
                if defaults.otlp_endpoint
                else []
            ),
        ],
        # Session events for `cadre logs`, read through the API server's pod proxy.
        "ports": [
            {"name": "events", "containerPort": HARNESS_EVENTS_PORT, "protocol": "TCP"},
            *proxy_ports,
        ],
        # Ready only once it serves: an Agent is Ready when its harness works, not when a pod
        # that crashes at start merely exists.
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": "events"},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "volumeMounts": [{"name": "state", "mountPath": HARNESS_STATE_DIR}, *ca_mounts],
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": HARNESS_UID,
            "runAsGroup": HARNESS_UID,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(target, name),
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": harness_selector(target.name)},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash(target)},
                },
                "spec": {
                    "serviceAccountName": name,
                    **({"hostUsers": False} if defaults.user_namespaces else {}),
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "fsGroup": HARNESS_UID,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    **({"volumes": ca_volumes} if ca_volumes else {}),
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "state"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": defaults.state_size}},
                    },
                }
            ],
        },
    }


def build_memory_config_map(target: AgentTarget) -> dict[str, Any]:
    """The Agent's memory, empty at first; the operator never writes it again (``ensure``
    leaves an existing ConfigMap alone), the harness and people with kubectl do."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            **_metadata(target, memory_name(target.name)),
            "labels": {
                **MANAGED_BY,
                "app.kubernetes.io/name": "cadre-memory",
                AGENT_LABEL: target.name,
            },
        },
        "data": {MEMORY_KEY: "[]\n"},
    }


def _port_of(url: str) -> int:
    parsed = urlsplit(url)
    return parsed.port or (443 if parsed.scheme == "https" else 80)


def _tcp(ports: tuple[int, ...] | None) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports] if ports else [{"protocol": "TCP"}]


def build_harness_network_policy(target: AgentTarget, defaults: HarnessDefaults) -> dict[str, Any]:
    """The harness reaches DNS, the API server, its model endpoints and its own sandboxes, and
    is reached on its events port by no pod (the API server's pod proxy comes from the node),
    so neither a sandbox nor another workload can read its transcripts or use its key."""
    dns = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    sandboxes = {COMPONENT_LABEL: "sandbox", AGENT_LABEL: target.name}
    ingress: list[dict[str, Any]] = []
    egress = _egress(target)
    if egress is not None:
        # Its sandboxes reach its egress proxy, which reaches the allowed hosts' ports.
        ingress.append({
            "from": [{"podSelector": {"matchLabels": sandboxes}}],
            "ports": [{"protocol": "TCP", "port": PROXY_PORT}],
        })  # fmt: skip
    if defaults.events_from:
        ingress.append({
            "from": list(defaults.events_from),
            "ports": [{"protocol": "TCP", "port": HARNESS_EVENTS_PORT}],
        })  # fmt: skip
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(target, harness_name(target.name)),
        "spec": {
            "podSelector": {"matchLabels": harness_selector(target.name)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": ingress,
            "egress": [
                {"ports": dns},
                {"ports": _tcp(defaults.api_server_ports)},
                {"ports": _tcp(defaults.model_ports)},
                *([{"ports": _tcp(mcp)}] if (mcp := _mcp_ports(target)) else []),
                *([{"ports": _tcp(egress_ports(egress["hosts"]))}] if egress else []),
                *(
                    [{"ports": _tcp((_port_of(defaults.otlp_endpoint),))}]
                    if defaults.otlp_endpoint
                    else []
                ),
                {
                    "to": [{"podSelector": {"matchLabels": sandboxes}}],
                    "ports": [{"protocol": "TCP", "port": protocol.DEFAULT_PORT}],
                },
            ],
        },
    }


def build_harness_objects(target: AgentTarget, defaults: HarnessDefaults) -> list[dict[str, Any]]:
    """Everything an Agent's harness needs, in the order to create it (the NetworkPolicy
    before the pod, so the pod never runs unconfined)."""
    return [
        build_memory_config_map(target),
        build_harness_service_account(target),
        build_harness_role(target),
        build_harness_role_binding(target),
        build_harness_network_policy(target, defaults),
        build_harness_statefulset(target, defaults),
    ]
