"""The operator's defaults from its environment (what the Helm chart sets): parsed, and a bad
value refused at start-up with the variable named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cadre.operator.settings import SettingsError, from_env


def test_defaults_without_any_variable() -> None:
    found = from_env({})
    assert found.harness.image.startswith("ghcr.io/cadre-dev/cadre:")
    assert found.sandbox.image.startswith("ghcr.io/cadre-dev/sandbox:")
    assert found.sandbox.limits == {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "1Gi"}
    assert found.harness.requests is None
    assert found.release_seconds == 10
    assert [str(e) for e in found.model_endpoints] == ["https://api.anthropic.com:443"]
    assert found.harness.model_ports == (443,)
    assert found.harness.api_server_ports == (443, 6443)
    assert found.harness.events_from == ()


def test_every_variable_is_read() -> None:
    found = from_env({
        "CADRE_HARNESS_IMAGE": "registry.example/cadre:1.2", "CADRE_SANDBOX_IMAGE": "r/sbx:1",
        "CADRE_HARNESS_STATE_SIZE": "5Gi", "CADRE_HARNESS_REQUESTS": '{"cpu": "100m"}',
        "CADRE_HARNESS_LIMITS": '{"memory": "1Gi"}', "CADRE_SANDBOX_LIMITS": '{"cpu": "2"}',
        "CADRE_SANDBOX_TMP_SIZE": "1Gi", "CADRE_SANDBOX_RELEASE_SECONDS": "30",
        "CADRE_MODEL_ENDPOINTS": "https://gateway.internal/anthropic, http://10.0.0.5:*",
        "CADRE_USER_NAMESPACES": "true", "CADRE_API_SERVER_PORTS": "6443",
        "CADRE_HARNESS_EVENTS_FROM": '[{"ipBlock": {"cidr": "10.1.0.0/16"}}]',
    })  # fmt: skip
    assert (found.harness.image, found.sandbox.image) == ("registry.example/cadre:1.2", "r/sbx:1")
    assert found.harness.state_size == "5Gi"
    assert (found.harness.requests, found.harness.limits) == ({"cpu": "100m"}, {"memory": "1Gi"})
    assert found.sandbox.limits == {"cpu": "2", "memory": "1Gi", "ephemeral-storage": "1Gi"}
    assert found.sandbox.tmp_size == "1Gi"
    assert found.release_seconds == 30
    assert [str(e) for e in found.model_endpoints] == [
        "https://gateway.internal:443/anthropic", "http://10.0.0.5:*"]  # fmt: skip
    assert found.harness.user_namespaces
    assert found.harness.api_server_ports == (6443,)
    assert found.harness.model_ports is None  # http://10.0.0.5:* allows any port
    assert found.harness.events_from == ({"ipBlock": {"cidr": "10.1.0.0/16"}},)
    assert found.sandbox.user_namespaces


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CADRE_HARNESS_STATE_SIZE", "lots", "CADRE_HARNESS_STATE_SIZE='lots' is not a Kubernetes"),
        ("CADRE_SANDBOX_LIMITS", "{cpu: 2}", "CADRE_SANDBOX_LIMITS is not JSON"),
        ("CADRE_SANDBOX_LIMITS", '["2"]', "CADRE_SANDBOX_LIMITS must be a JSON object"),
        ("CADRE_SANDBOX_LIMITS", '{"gpu": "1"}', "CADRE_SANDBOX_LIMITS: 'gpu' is not one of"),
        ("CADRE_HARNESS_LIMITS", '{"memory": "a lot"}', "CADRE_HARNESS_LIMITS='a lot'"),
        ("CADRE_SANDBOX_RELEASE_SECONDS", "-1", "CADRE_SANDBOX_RELEASE_SECONDS='-1' is not"),
        ("CADRE_SANDBOX_RELEASE_SECONDS", "soon", "CADRE_SANDBOX_RELEASE_SECONDS='soon'"),
        ("CADRE_MODEL_ENDPOINTS", "api.anthropic.com", "CADRE_MODEL_ENDPOINTS: 'api.anthropic"),
        ("CADRE_MODEL_ENDPOINTS", "https://u:p@gw.example", "user name or password"),
        ("CADRE_MODEL_ENDPOINTS", " , ", "CADRE_MODEL_ENDPOINTS lists no endpoint"),
        ("CADRE_API_SERVER_PORTS", "https", "CADRE_API_SERVER_PORTS='https' is not a"),
        ("CADRE_API_SERVER_PORTS", "70000", "is not a comma-separated list of ports"),
        ("CADRE_HARNESS_EVENTS_FROM", '{"ipBlock": {}}', "must be a JSON list"),
        ("CADRE_USER_NAMESPACES", "yes", "CADRE_USER_NAMESPACES='yes' is not true or false"),
    ],
)
def test_a_bad_value_names_its_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError) as caught:
        from_env({name: value})
    assert message in str(caught.value)


def test_the_operator_refuses_to_start_with_a_bad_value() -> None:
    env = {**os.environ, "CADRE_SANDBOX_TMP_SIZE": "big", "KUBECONFIG": "/nonexistent"}
    result = subprocess.run(
        [sys.executable, "-m", "cadre.cli.main", "operator"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Error: CADRE_SANDBOX_TMP_SIZE='big' is not a Kubernetes quantity" in result.stderr
    assert "Traceback" not in result.stderr
