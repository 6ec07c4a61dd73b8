"""Pure builders of a Task's sandbox: token Secret, workspace volume, NetworkPolicy, Pod,
Service. They return plain dicts; the operator's handlers only adopt and write them.

The sandbox runs the model's commands, so it is built to be worthless to whoever takes it
over: no credential (not even its own token, only the token's digest), no service-account
token, Pod Security Standard "restricted" plus a read-only root filesystem, bounded resources,
and a network that admits only its harness and reaches out only as the Agent allows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cadre.api.agent import EgressMode, Sandbox
from cadre.api.egress import EGRESS_CA_DIR, PROXY_PORT
from cadre.api.meta import owner_reference
from cadre.api.names import (
    harness_selector,
    sandbox_labels,
    sandbox_name,
    sandbox_selector,
    sandbox_token_secret_name,
    sandbox_workspace_name,
)
from cadre.operator.egress_ca import egress_ca_name
from cadre.sandbox import protocol

SANDBOX_SERVICE_ACCOUNT = "cadre-sandbox"
TOKEN_MOUNT = protocol.TOKEN_DIR
TOKEN_KEY = protocol.TOKEN_KEY
WORKSPACE_MOUNT = protocol.DEFAULT_WORKSPACE
TMP_MOUNT = "/tmp"  # noqa: S108 - the pod's own emptyDir, the only other writable place

PRIVATE_IPV4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
LINK_LOCAL_IPV4 = "169.254.0.0/16"
# Also kept out of "Public": loopback and carrier-grade NAT space, which many pod networks use.
OTHER_INTERNAL_IPV4 = ("127.0.0.0/8", "100.64.0.0/10")
PRIVATE_IPV6 = ("fc00::/7",)
LINK_LOCAL_IPV6 = "fe80::/10"
OTHER_INTERNAL_IPV6 = ("::1/128",)


SANDBOX_UID = 10002
"""Not the harness's user (10001): where pods share the node's users (no user namespaces), a
command that escaped its sandbox is still not the user holding the model key."""


@dataclass(frozen=True)
class SandboxDefaults:
    """Operator-wide settings (from the Helm values) that an Agent's spec may override."""

    image: str
    port: int = protocol.DEFAULT_PORT
    uid: int = SANDBOX_UID
    """The fixed non-root user every sandbox runs as."""
    limits: dict[str, str] = field(
        default_factory=lambda: {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"}
    )
    tmp_size: str = "256Mi"
    termination_grace_seconds: int = 30
    user_namespaces: bool = False
    """``hostUsers: false``: the pod's users are not the node's (Kubernetes 1.33+, a runtime
    that supports it); root in the container is nobody on the node."""


@dataclass(frozen=True)
class SandboxTarget:
    """The one Task a sandbox serves."""

    namespace: str
    task: str
    task_uid: str
    agent: str
    spec: Sandbox
    token_sha256: str


def _metadata(target: SandboxTarget, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": target.namespace,
        "labels": sandbox_labels(target.task, target.agent),
        "ownerReferences": [owner_reference("Task", target.task, target.task_uid)],
    }


def build_sandbox_service_account(namespace: str) -> dict[str, Any]:
    """The identity every sandbox pod runs as: bound to no Role, and never mounted."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": SANDBOX_SERVICE_ACCOUNT,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "cadre"},
        },
        "automountServiceAccountToken": False,
    }


def build_sandbox_token_secret(target: SandboxTarget) -> dict[str, Any]:
    """The only Secret a sandbox mounts: the digest of its session token, not the token."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(target, sandbox_token_secret_name(target.task)),
        "type": "Opaque",
        "immutable": True,
        "stringData": {TOKEN_KEY: target.token_sha256},
    }


def build_sandbox_workspace(target: SandboxTarget) -> dict[str, Any]:
    """The workspace volume: outlives sandbox pod restarts; kept or deleted per retention."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(target, sandbox_workspace_name(target.task)),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": target.spec.workspace.size}},
        },
    }


def _egress_rules(spec: Sandbox, agent: str) -> list[dict[str, Any]]:
    mode = spec.egress.mode
    if mode == EgressMode.NONE:
        return []
    if mode == EgressMode.HOSTS:
        # Only the Agent's harness, on its egress proxy: the proxy decides by host name.
        return [{
            "to": [{"podSelector": {"matchLabels": harness_selector(agent)}}],
            "ports": [{"protocol": "TCP", "port": PROXY_PORT}],
        }]  # fmt: skip
    if mode == EgressMode.ALLOW_LIST:
        # Explicit CIDRs need no DNS; a private range here is the Agent's explicit choice.
        return [{"to": [{"ipBlock": {"cidr": cidr}} for cidr in spec.egress.cidrs]}]
    dns = {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "kube-system"}
                },
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    public = {
        "to": [
            {
                "ipBlock": {
                    "cidr": "0.0.0.0/0",
                    "except": [*PRIVATE_IPV4, LINK_LOCAL_IPV4, *OTHER_INTERNAL_IPV4],
                }
            },
            {
                "ipBlock": {
                    "cidr": "::/0",
                    "except": [*PRIVATE_IPV6, LINK_LOCAL_IPV6, *OTHER_INTERNAL_IPV6],
                }
            },
        ]
    }
    return [dns, public]


def build_sandbox_network_policy(
    target: SandboxTarget, defaults: SandboxDefaults
) -> dict[str, Any]:
    """Ingress only from this Agent's harness on the tool port; egress as the Agent allows,
    none by default. Created before the pod, so the pod never runs unconfined."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(target, sandbox_name(target.task)),
        "spec": {
            "podSelector": {"matchLabels": sandbox_selector(target.task)},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": harness_selector(target.agent)}}],
                    "ports": [{"protocol": "TCP", "port": defaults.port}],
                }
            ],
            "egress": _egress_rules(target.spec, target.agent),
        },
    }


def _resources(spec: Sandbox, defaults: SandboxDefaults) -> dict[str, Any]:
    wanted = spec.resources
    given_limits = wanted.limits.to_json() if wanted and wanted.limits else {}
    limits = {**defaults.limits, **given_limits}
    requests = wanted.requests.to_json() if wanted and wanted.requests else {}
    return {"limits": limits, "requests": {**limits, **requests}}


def build_sandbox_pod(target: SandboxTarget, defaults: SandboxDefaults) -> dict[str, Any]:
    """The sandbox pod: ``python -m cadre.sandbox`` with no credential of any kind."""
    uid = defaults.uid
    pod_spec: dict[str, Any] = {
        "serviceAccountName": SANDBOX_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # no environment variables describing other Services
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        **({"hostUsers": False} if defaults.user_namespaces else {}),
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": defaults.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "sandbox",
                "image": target.spec.image or defaults.image,
                "command": ["python3", "-m", "cadre.sandbox"],
                "env": [
                    # Listen on the pod's own address only (also what lets pods share a
                    # machine in the local cluster).
                    {
                        "name": protocol.ENV_HOST,
                        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                    },
                    {"name": protocol.ENV_PORT, "value": str(defaults.port)},
                    {"name": protocol.ENV_WORKSPACE, "value": WORKSPACE_MOUNT},
                    {
                        "name": protocol.ENV_TOKEN_SHA256_FILE,
                        "value": f"{TOKEN_MOUNT}/{TOKEN_KEY}",
                    },
                    {"name": "HOME", "value": TMP_MOUNT},
                    {"name": "TMPDIR", "value": TMP_MOUNT},
                ],
                "ports": [{"name": "tools", "containerPort": defaults.port, "protocol": "TCP"}],
                "readinessProbe": {
                    "httpGet": {"path": "/healthz", "port": "tools"},
                    "periodSeconds": 2,
                },
                "livenessProbe": {
                    "httpGet": {"path": "/healthz", "port": "tools"},
                    "periodSeconds": 10,
                    "failureThreshold": 3,
                },
                "resources": _resources(target.spec, defaults),
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": uid,
                    "runAsGroup": uid,
                    "privileged": False,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumeMounts": [
                    {"name": "workspace", "mountPath": WORKSPACE_MOUNT},
                    {"name": "tmp", "mountPath": TMP_MOUNT},
                    {"name": "token", "mountPath": TOKEN_MOUNT, "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {
                "name": "workspace",
                "persistentVolumeClaim": {"claimName": sandbox_workspace_name(target.task)},
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": defaults.tmp_size}},
            {
                "name": "token",
                "secret": {
                    "secretName": sandbox_token_secret_name(target.task),
                    "defaultMode": 0o440,
                    "items": [{"key": TOKEN_KEY, "path": TOKEN_KEY}],
                },
            },
        ],
    }
    if target.spec.egress.mode == EgressMode.HOSTS:
        # The Agent's egress CA's certificate (never its key): tools trust what the egress
        # proxy presents for hosts whose requests carry a credential.
        container = pod_spec["containers"][0]
        container["env"].append({"name": protocol.ENV_EXTRA_CA, "value": f"{EGRESS_CA_DIR}/ca.crt"})
        container["volumeMounts"].append(
            {"name": "egress-ca", "mountPath": EGRESS_CA_DIR, "readOnly": True}
        )
        pod_spec["volumes"].append(
            {"name": "egress-ca", "configMap": {"name": egress_ca_name(target.agent)}}
        )
    if target.spec.runtime_class_name:
        pod_spec["runtimeClassName"] = target.spec.runtime_class_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _metadata(target, sandbox_name(target.task)),
        "spec": pod_spec,
    }


def build_sandbox_service(target: SandboxTarget, defaults: SandboxDefaults) -> dict[str, Any]:
    """How the harness reaches the sandbox: ``sbx-<task>.<namespace>.svc:<port>``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(target, sandbox_name(target.task)),
        "spec": {
            "type": "ClusterIP",
            "selector": sandbox_selector(target.task),
            "ports": [
                {"name": "tools", "port": defaults.port, "targetPort": "tools", "protocol": "TCP"}
            ],
        },
    }


def build_sandbox_objects(target: SandboxTarget, defaults: SandboxDefaults) -> list[dict[str, Any]]:
    """Everything a sandbox needs, in the order to create it: the NetworkPolicy before the
    Pod, so there is never a moment the pod runs without it."""
    return [
        build_sandbox_token_secret(target),
        build_sandbox_workspace(target),
        build_sandbox_network_policy(target, defaults),
        build_sandbox_pod(target, defaults),
        build_sandbox_service(target, defaults),
    ]
