"""The server counts requests by verb, resource and client, for tests and benchmarks."""

from __future__ import annotations

import kubernetes
from cadre.localcluster.runner import ThreadedApiServer
from prometheus_client.parser import text_string_to_metric_families

from tests.localcluster.conftest import Http, Kubectl


def test_counts_by_verb_resource_and_client(
    apiserver: ThreadedApiServer, kubectl: Kubectl, api: kubernetes.client.ApiClient, namespace: str
) -> None:
    server = apiserver.server
    assert server is not None
    before = server.request_counts()
    kubectl("get", "tasks", "-n", namespace)
    kubernetes.client.CustomObjectsApi(api).list_namespaced_custom_object(
        "cadre.dev", "v1alpha1", namespace, "tasks"
    )
    after = server.request_counts()

    def grew(key: tuple[str, str, str, str, str]) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert grew(("list", "cadre.dev", "tasks", "", "kubectl")) == 1
    assert grew(("list", "cadre.dev", "tasks", "", "OpenAPI-Generator")) == 1


def test_metrics_endpoint_serves_the_counters(http: Http) -> None:
    http("GET", "/api/v1/namespaces")
    text = http("GET", "/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families["apiserver_request"].samples
    assert any(s.labels["resource"] == "namespaces" and s.labels["verb"] == "list" for s in samples)
