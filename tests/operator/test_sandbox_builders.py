"""Each security property of the sandbox's objects is its own test, so a regression names itself."""

from __future__ import annotations

import dataclasses
from typing import Any

import kubernetes_validate
import pytest
from cadre.api.agent import Sandbox
from cadre.api.names import harness_selector
from cadre.operator.harness_builders import HARNESS_UID
from cadre.operator.sandbox_builders import (
    SANDBOX_UID,
    SandboxDefaults,
    SandboxTarget,
    build_sandbox_network_policy,
    build_sandbox_objects,
    build_sandbox_pod,
    build_sandbox_service,
    build_sandbox_service_account,
    build_sandbox_token_secret,
)

DIGEST = "a" * 64
DEFAULTS = SandboxDefaults(image="ghcr.io/cadre-dev/sandbox:0.1.0")


def target(**sandbox: Any) -> SandboxTarget:
    return SandboxTarget(
        namespace="team-a",
        task="fix-bug",
        task_uid="1234-uid",
        agent="engineer",
        spec=Sandbox.model_validate(sandbox),
        token_sha256=DIGEST,
    )


@pytest.fixture
def pod() -> dict[str, Any]:
    return build_sandbox_pod(target(), DEFAULTS)


@pytest.fixture
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["spec"]["containers"]
    return only


def all_text(obj: Any) -> str:
    return repr(obj)


def test_no_service_account_token_is_mounted(pod: dict[str, Any]) -> None:
    assert pod["spec"]["automountServiceAccountToken"] is False


def test_it_runs_as_the_dedicated_sandbox_service_account(pod: dict[str, Any]) -> None:
    assert pod["spec"]["serviceAccountName"] == "cadre-sandbox"
    account = build_sandbox_service_account("team-a")
    assert account["automountServiceAccountToken"] is False


def test_user_namespaces_when_the_operator_is_told_to(pod: dict[str, Any]) -> None:
    assert "hostUsers" not in pod["spec"]
    on = build_sandbox_pod(target(), dataclasses.replace(DEFAULTS, user_namespaces=True))
    assert on["spec"]["hostUsers"] is False


def test_runs_as_a_fixed_non_root_user(pod: dict[str, Any], container: dict[str, Any]) -> None:
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == SANDBOX_UID
    assert container["securityContext"]["runAsUser"] == SANDBOX_UID
    assert SANDBOX_UID != HARNESS_UID  # the sandbox is never the user holding the key


def test_privilege_escalation_is_off(container: dict[str, Any]) -> None:
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_all_capabilities_are_dropped(container: dict[str, Any]) -> None:
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_seccomp_is_runtime_default(pod: dict[str, Any], container: dict[str, Any]) -> None:
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


def test_root_filesystem_is_read_only_with_writable_workspace_and_tmp(
    container: dict[str, Any],
) -> None:
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"/workspace", "/tmp"}


def test_not_privileged_and_no_host_namespaces(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    assert container["securityContext"]["privileged"] is False
    assert not pod["spec"]["hostNetwork"]
    assert not pod["spec"]["hostPID"]
    assert not pod["spec"]["hostIPC"]


def test_no_environment_variable_comes_from_a_secret_or_config(container: dict[str, Any]) -> None:
    sources = [env["valueFrom"] for env in container["env"] if "valueFrom" in env]
    assert sources == [{"fieldRef": {"fieldPath": "status.podIP"}}]  # its own address only
    assert "envFrom" not in container


def test_the_only_secret_volume_is_the_session_token_digest(pod: dict[str, Any]) -> None:
    secrets = [v["secret"] for v in pod["spec"]["volumes"] if "secret" in v]
    assert secrets == [
        {
            "secretName": "sbx-fix-bug-token",
            "defaultMode": 0o440,
            "items": [{"key": "token-sha256", "path": "token-sha256"}],
        }
    ]
    assert all("projected" not in v for v in pod["spec"]["volumes"])


def test_the_token_secret_holds_only_a_digest() -> None:
    secret = build_sandbox_token_secret(target())
    assert secret["stringData"] == {"token-sha256": DIGEST}
    assert secret["immutable"] is True


def test_nothing_mentions_an_api_key() -> None:
    text = all_text(build_sandbox_objects(target(), DEFAULTS)).lower()
    assert "anthropic" not in text
    assert "api-key" not in text
    assert "api_key" not in text


def test_service_links_are_off(pod: dict[str, Any]) -> None:
    assert pod["spec"]["enableServiceLinks"] is False


def test_cpu_memory_and_ephemeral_storage_are_limited(container: dict[str, Any]) -> None:
    assert set(container["resources"]["limits"]) == {"cpu", "memory", "ephemeral-storage"}


def test_agent_limits_override_the_defaults() -> None:
    pod = build_sandbox_pod(target(resources={"limits": {"memory": "4Gi"}}), DEFAULTS)
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "1", "memory": "4Gi", "ephemeral-storage": "1Gi"}


def test_tmp_is_size_limited(pod: dict[str, Any]) -> None:
    (tmp,) = [v for v in pod["spec"]["volumes"] if v["name"] == "tmp"]
    assert tmp["emptyDir"]["sizeLimit"] == "256Mi"


def test_runtime_class_only_when_asked(pod: dict[str, Any]) -> None:
    assert "runtimeClassName" not in pod["spec"]
    gvisor = build_sandbox_pod(target(runtimeClassName="gvisor"), DEFAULTS)
    assert gvisor["spec"]["runtimeClassName"] == "gvisor"


def test_labels_cannot_impersonate_a_harness_or_another_session(pod: dict[str, Any]) -> None:
    labels = pod["metadata"]["labels"]
    selector = harness_selector("engineer")
    assert not all(labels.get(k) == v for k, v in selector.items())
    assert labels["cadre.dev/task"] == "fix-bug"
    other = build_sandbox_pod(
        SandboxTarget("team-a", "other-task", "u2", "engineer", Sandbox(), DIGEST), DEFAULTS
    )
    policy = build_sandbox_network_policy(target(), DEFAULTS)
    chosen = policy["spec"]["podSelector"]["matchLabels"]
    assert not all(other["metadata"]["labels"].get(k) == v for k, v in chosen.items())


def test_everything_is_owned_by_the_task() -> None:
    for obj in build_sandbox_objects(target(), DEFAULTS):
        (owner,) = obj["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("Task", "fix-bug", "1234-uid")
        assert owner["controller"] is True


def test_the_network_policy_comes_before_the_pod() -> None:
    kinds = [obj["kind"] for obj in build_sandbox_objects(target(), DEFAULTS)]
    assert kinds.index("NetworkPolicy") < kinds.index("Pod")


def test_ingress_only_from_this_agents_harness_on_the_tool_port() -> None:
    policy = build_sandbox_network_policy(target(), DEFAULTS)["spec"]
    assert "Ingress" in policy["policyTypes"]
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": harness_selector("engineer")}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_egress_is_none_by_default() -> None:
    policy = build_sandbox_network_policy(target(), DEFAULTS)["spec"]
    assert "Egress" in policy["policyTypes"]
    assert policy["egress"] == []


def test_allow_list_egress_is_exactly_the_cidrs_without_dns() -> None:
    spec = target(egress={"mode": "AllowList", "cidrs": ["203.0.113.0/24"]})
    policy = build_sandbox_network_policy(spec, DEFAULTS)["spec"]
    assert policy["egress"] == [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]


def test_public_egress_excludes_private_link_local_and_their_ipv6_counterparts() -> None:
    policy = build_sandbox_network_policy(target(egress={"mode": "Public"}), DEFAULTS)["spec"]
    blocks = [
        peer["ipBlock"] for rule in policy["egress"] for peer in rule["to"] if "ipBlock" in peer
    ]
    v4 = next(b for b in blocks if b["cidr"] == "0.0.0.0/0")
    v6 = next(b for b in blocks if b["cidr"] == "::/0")
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"):
        assert cidr in v4["except"]
    for cidr in ("fc00::/7", "fe80::/10"):
        assert cidr in v6["except"]


def test_public_egress_allows_dns_to_kube_dns_only() -> None:
    policy = build_sandbox_network_policy(target(egress={"mode": "Public"}), DEFAULTS)["spec"]
    dns = [rule for rule in policy["egress"] if rule.get("ports")]
    assert dns[0]["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert dns[0]["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}


def test_the_service_selects_only_this_sandbox() -> None:
    service = build_sandbox_service(target(), DEFAULTS)
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/component": "sandbox",
        "cadre.dev/task": "fix-bug",
    }
    assert service["metadata"]["name"] == "sbx-fix-bug"


def test_a_task_name_starting_with_a_digit_still_gives_a_valid_service_name() -> None:
    numeric = SandboxTarget("ns", "42-fix", "u", "engineer", Sandbox(), DIGEST)
    assert build_sandbox_service(numeric, DEFAULTS)["metadata"]["name"] == "sbx-42-fix"


@pytest.mark.parametrize(
    "egress", [{}, {"mode": "Public"}, {"mode": "AllowList", "cidrs": ["1.2.3.0/24"]}]
)
def test_every_object_validates_against_the_kubernetes_schemas(egress: dict[str, Any]) -> None:
    objects = [
        *build_sandbox_objects(target(egress=egress, runtimeClassName="kata"), DEFAULTS),
        build_sandbox_service_account("team-a"),
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, "1.32", strict=True)
