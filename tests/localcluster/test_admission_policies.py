"""ValidatingAdmissionPolicies in the local API server, as kube-apiserver applies them: what
selects a request, what a failed or erroring expression answers, and what a policy that cannot
work is refused with. ConfigMaps stand in for any kind; each test's policy selects only its
own namespace (this module has its own API server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.localcluster.conftest import Http

ADMISSION = "/apis/admissionregistration.k8s.io/v1"
MERGE = "application/merge-patch+json"


def _policy(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    rules = [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
              "resources": ["configmaps"]}]  # fmt: skip
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "matchConstraints": {
                "resourceRules": rules,
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            },
            **spec,
        },
    }


@pytest.fixture
def install(http: Http) -> Iterator[Any]:
    """Create a policy and its binding (deleted afterwards)."""
    made: list[str] = []

    def create(policy: dict[str, Any], actions: list[str] | None = None) -> None:
        name = policy["metadata"]["name"]
        response = http("POST", f"{ADMISSION}/validatingadmissionpolicies", policy)
        assert response.status_code == 201, response.text
        binding = {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {"policyName": name, "validationActions": actions or ["Deny"]},
        }
        response = http("POST", f"{ADMISSION}/validatingadmissionpolicybindings", binding)
        assert response.status_code == 201, response.text
        made.append(name)

    yield create
    for name in made:
        http("DELETE", f"{ADMISSION}/validatingadmissionpolicybindings/{name}")
        http("DELETE", f"{ADMISSION}/validatingadmissionpolicies/{name}")


def _configmap(http: Http, namespace: str, name: str, data: dict[str, str]) -> Any:
    body = {"metadata": {"name": name}, "data": data}
    return http("POST", f"/api/v1/namespaces/{namespace}/configmaps", body)


def test_a_failed_validation_denies_with_its_message_and_reason(
    http: Http, namespace: str, install: Any
) -> None:
    install(_policy(
        f"small-{namespace}", namespace,
        validations=[{"expression": "size(object.data) <= 1", "reason": "Forbidden",
                      "messageExpression": "'at most one key, not ' + string(size(object.data))"}],
    ))  # fmt: skip
    assert _configmap(http, namespace, "ok", {"a": "1"}).status_code == 201
    refused = _configmap(http, namespace, "big", {"a": "1", "b": "2"})
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        f"configmaps \"big\" is forbidden: ValidatingAdmissionPolicy 'small-{namespace}' with"
        f" binding 'small-{namespace}' denied request: at most one key, not 2"
    )
    # An update is checked too, and against the object as it would be stored.
    patched = http(
        "PATCH", f"/api/v1/namespaces/{namespace}/configmaps/ok", {"data": {"c": "3"}}, MERGE
    )
    assert patched.status_code == 403


def test_without_a_reason_the_answer_is_422_invalid(
    http: Http, namespace: str, install: Any
) -> None:
    install(
        _policy(
            f"named-{namespace}",
            namespace,
            validations=[{"expression": "object.metadata.name.startsWith('x-')"}],
        )
    )
    refused = _configmap(http, namespace, "plain", {})
    assert (refused.status_code, refused.json()["reason"]) == (422, "Invalid")
    assert "failed expression: object.metadata.name.startsWith('x-')" in refused.json()["message"]


def test_match_conditions_and_variables(http: Http, namespace: str, install: Any) -> None:
    install(_policy(
        f"cond-{namespace}", namespace,
        matchConditions=[{"name": "labelled", "expression":
                          "has(object.metadata.labels) && 'guarded' in object.metadata.labels"}],
        variables=[{"name": "keys", "expression": "size(object.data)"}],
        validations=[{"expression": "variables.keys == 0"}],
    ))  # fmt: skip
    assert _configmap(http, namespace, "free", {"a": "1"}).status_code == 201  # not matched
    body = {"metadata": {"name": "g", "labels": {"guarded": "y"}}, "data": {"a": "1"}}
    assert http("POST", f"/api/v1/namespaces/{namespace}/configmaps", body).status_code == 422


def test_an_expression_that_errors_follows_the_failure_policy(
    http: Http, namespace: str, install: Any
) -> None:
    install(
        _policy(
            f"fail-{namespace}",
            namespace,
            validations=[{"expression": "object.data.missing == 'x'"}],
        )
    )
    refused = _configmap(http, namespace, "a", {"k": "v"})
    assert refused.status_code == 422
    assert "resulted in error" in refused.json()["message"]


def test_ignore_lets_an_erroring_request_through(http: Http, namespace: str, install: Any) -> None:
    install(
        _policy(
            f"ign-{namespace}",
            namespace,
            failurePolicy="Ignore",
            validations=[{"expression": "object.data.missing == 'x'"}],
        )
    )
    assert _configmap(http, namespace, "a", {"k": "v"}).status_code == 201


def test_warn_answers_a_warning_and_lets_the_request_through(
    http: Http, namespace: str, install: Any
) -> None:
    install(
        _policy(f"warn-{namespace}", namespace,
                validations=[{"expression": "false", "message": "think again"}]),
        actions=["Warn"],
    )  # fmt: skip
    response = _configmap(http, namespace, "a", {})
    assert response.status_code == 201
    assert "think again" in response.headers.get("Warning", "")


def test_a_policy_that_cannot_work_is_refused_naming_the_field(http: Http) -> None:
    broken = _policy("broken", "nowhere", validations=[{"expression": "object.data ==="}])
    response = http("POST", f"{ADMISSION}/validatingadmissionpolicies", broken)
    assert response.status_code == 422
    assert "spec.validations[0].expression" in response.json()["message"]
    with_params = _policy("params", "nowhere", validations=[{"expression": "true"}],
                          paramKind={"apiVersion": "v1", "kind": "ConfigMap"})  # fmt: skip
    response = http("POST", f"{ADMISSION}/validatingadmissionpolicies", with_params)
    assert response.status_code == 422
    assert "spec.paramKind" in response.json()["message"]
