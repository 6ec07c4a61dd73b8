"""The object rules clients rely on, through the real ``kubernetes`` client and plain HTTPS:
identity and versions, the status subresource, optimistic concurrency, and the error bodies."""

from __future__ import annotations

import json

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from tests.localcluster.conftest import Http, agent_manifest, task_manifest

G, V = "cadre.dev", "v1alpha1"


@pytest.fixture
def custom(api: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(api)


@pytest.fixture
def core(api: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api)


def test_create_sets_identity_and_versions(
    custom: kubernetes.client.CustomObjectsApi, namespace: str
) -> None:
    created = custom.create_namespaced_custom_object(G, V, namespace, "tasks", task_manifest("one"))
    meta = created["metadata"]
    assert len(meta["uid"]) == 36
    assert int(meta["resourceVersion"]) > 0
    assert meta["generation"] == 1
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["namespace"] == namespace
    other = custom.create_namespaced_custom_object(G, V, namespace, "tasks", task_manifest("two"))
    assert int(other["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])


def test_defaults_from_the_crd_schema_are_applied(
    custom: kubernetes.client.CustomObjectsApi, namespace: str
) -> None:
    created = custom.create_namespaced_custom_object(
        G, V, namespace, "agents", agent_manifest("dflt")
    )
    assert created["spec"]["maxConcurrentTasks"] >= 1


def test_generation_counts_spec_changes_only(
    custom: kubernetes.client.CustomObjectsApi, namespace: str
) -> None:
    custom.create_namespaced_custom_object(G, V, namespace, "tasks", task_manifest("gen"))
    labeled = custom.patch_namespaced_custom_object(
        G, V, namespace, "tasks", "gen", {"metadata": {"labels": {"a": "b"}}}
    )
    assert labeled["metadata"]["generation"] == 1
    changed = custom.patch_namespaced_custom_object(
        G, V, namespace, "tasks", "gen", {"spec": {"title": "new"}}
    )
    assert changed["metadata"]["generation"] == 2


def test_status_subresource_separates_spec_and_status(
    custom: kubernetes.client.CustomObjectsApi, namespace: str
) -> None:
    custom.create_namespaced_custom_object(
        G, V, namespace, "tasks", task_manifest("split", title="a")
    )
    via_main = custom.patch_namespaced_custom_object(
        G, V, namespace, "tasks", "split", {"spec": {"title": "b"}, "status": {"phase": "Running"}}
    )
    assert via_main["spec"]["title"] == "b"
    assert "status" not in via_main or via_main["status"].get("phase") != "Running"
    via_status = custom.patch_namespaced_custom_object_status(
        G, V, namespace, "tasks", "split", {"spec": {"title": "c"}, "status": {"phase": "Running"}}
    )
    assert via_status["status"]["phase"] == "Running"
    assert via_status["spec"]["title"] == "b"
    assert via_status["metadata"]["generation"] == 2


def test_a_noop_update_keeps_the_resource_version(
    custom: kubernetes.client.CustomObjectsApi, namespace: str
) -> None:
    created = custom.create_namespaced_custom_object(
        G, V, namespace, "tasks", task_manifest("same", title="t")
    )
    again = custom.patch_namespaced_custom_object(
        G, V, namespace, "tasks", "same", {"spec": {"title": "t"}}
    )
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_a_stale_resource_version_conflicts(
    custom: kubernetes.client.CustomObjectsApi, namespace: str
) -> None:
    created = custom.create_namespaced_custom_object(
        G, V, namespace, "tasks", task_manifest("race")
    )
    custom.patch_namespaced_custom_object(
        G, V, namespace, "tasks", "race", {"spec": {"title": "first"}}
    )
    stale = {**created, "spec": {**created["spec"], "title": "second"}}
    with pytest.raises(ApiException) as caught:
        custom.replace_namespaced_custom_object(G, V, namespace, "tasks", "race", stale)
    assert caught.value.status == 409
    assert "the object has been modified" in caught.value.body


def test_generate_name(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    made = core.create_namespaced_config_map(namespace, {"metadata": {"generateName": "cfg-"}})
    assert made.metadata.name.startswith("cfg-")
    assert len(made.metadata.name) == len("cfg-") + 5


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "code", "reason", "says"),
    [
        (
            "POST",
            "/apis/cadre.dev/v1alpha1/namespaces/{ns}/tasks",
            "{not json",
            "application/json",
            400,
            "BadRequest",
            "json parse error",
        ),
        (
            "POST",
            "/apis/cadre.dev/v1alpha1/namespaces/{ns}/tasks",
            {"metadata": {"name": "x"}},
            "application/json",
            400,
            "BadRequest",
            "Object 'Kind' is missing",
        ),
        (
            "POST",
            "/apis/cadre.dev/v1alpha1/namespaces/{ns}/tasks",
            {**task_manifest("x"), "apiVersion": "cadre.dev/v9"},
            "application/json",
            400,
            "BadRequest",
            "does not match the expected API version",
        ),
        (
            "GET",
            "/apis/cadre.dev/v1alpha1/namespaces/{ns}/widgets",
            None,
            "application/json",
            404,
            "NotFound",
            "could not find the requested resource",
        ),
        (
            "GET",
            "/apis/cadre.dev/v1alpha1/namespaces/{ns}/tasks/missing",
            None,
            "application/json",
            404,
            "NotFound",
            'tasks.cadre.dev "missing" not found',
        ),
        (
            "POST",
            "/apis/cadre.dev/v1alpha1/namespaces/{ns}/tasks",
            task_manifest("x", prompt=""),
            "application/json",
            422,
            "Invalid",
            "spec.prompt",
        ),
        (
            "POST",
            "/apis/cadre.dev/v1alpha1/namespaces/nowhere/tasks",
            task_manifest("x"),
            "application/json",
            404,
            "NotFound",
            'namespaces "nowhere" not found',
        ),
        (
            "PATCH",
            "/apis/cadre.dev/v1alpha1/namespaces/{ns}/tasks/pre",
            {"spec": {}},
            "application/strategic-merge-patch+json",
            415,
            "UnsupportedMediaType",
            "application/merge-patch+json",
        ),
        (
            "GET",
            "/api/v1/namespaces/{ns}/pods?labelSelector=a%20in%20(",
            None,
            "application/json",
            400,
            "BadRequest",
            "unable to parse requirement",
        ),
        (
            "GET",
            "/api/v1/namespaces/{ns}/pods?fieldSelector=spec.image%3Dx",
            None,
            "application/json",
            400,
            "BadRequest",
            "field label not supported: spec.image",
        ),
        (
            "GET",
            "/apis/cadre.dev/v1alpha1/namespaces/{ns}/tasks?fieldSelector=spec.title%3Dx",
            None,
            "application/json",
            400,
            "BadRequest",
            "is not a known field selector",
        ),
    ],
)
def test_bad_requests_get_kubernetes_status_bodies(
    http: Http,
    namespace: str,
    method: str,
    path: str,
    body: object,
    content_type: str,
    code: int,
    reason: str,
    says: str,
) -> None:
    http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks", task_manifest("pre"))
    response = http(method, path.format(ns=namespace), body, content_type)
    assert response.status_code == code, response.text
    status = response.json()
    assert status["kind"] == "Status"
    assert status["reason"] == reason
    assert status["code"] == code
    assert says in status["message"]


def test_invalid_names_the_field_in_its_causes(http: Http, namespace: str) -> None:
    response = http(
        "POST",
        f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks",
        task_manifest("x", assignee={}),
    )
    assert response.status_code == 422
    causes = response.json()["details"]["causes"]
    assert any(c["field"] == "spec.assignee" for c in causes)
    assert all(c["reason"].startswith("FieldValue") for c in causes)


def test_already_exists(http: Http, namespace: str) -> None:
    path = f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks"
    assert http("POST", path, task_manifest("dup")).status_code == 201
    again = http("POST", path, task_manifest("dup"))
    assert again.status_code == 409
    assert again.json()["reason"] == "AlreadyExists"


def test_pagination_is_consistent_while_objects_change(http: Http, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    for index in range(7):
        http("POST", base, {"metadata": {"name": f"page-{index}"}})
    first = http("GET", base + "?limit=3").json()
    assert len(first["items"]) == 3
    assert first["metadata"]["remainingItemCount"] == 5  # 7 + kube-root-ca.crt - 3
    http("POST", base, {"metadata": {"name": "page-late"}})
    http("DELETE", base + "/page-6")
    names = [i["metadata"]["name"] for i in first["items"]]
    token = first["metadata"]["continue"]
    while token:
        page = http("GET", base + f"?limit=3&continue={token}").json()
        names += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue")
    assert names == sorted(["kube-root-ca.crt", *(f"page-{i}" for i in range(7))])


def test_pods_get_defaults_and_a_service_account_token_volume(
    core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    pod = {
        "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "main", "image": "nginx:1.27"}]},
    }
    made = core.create_namespaced_pod(namespace, pod)
    assert made.spec.service_account_name == "default"
    assert made.spec.restart_policy == "Always"
    assert made.status.phase == "Pending"
    mounts = made.spec.containers[0].volume_mounts
    assert [m.mount_path for m in mounts] == ["/var/run/secrets/kubernetes.io/serviceaccount"]
    sealed = {
        "metadata": {"name": "sealed"},
        "spec": {
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": "x:1"}],
        },
    }
    assert core.create_namespaced_pod(namespace, sealed).spec.volumes is None


def test_a_pod_naming_a_missing_service_account_is_forbidden(
    core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    pod = {
        "metadata": {"name": "lost"},
        "spec": {"serviceAccountName": "ghost", "containers": [{"name": "c", "image": "x:1"}]},
    }
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_pod(namespace, pod)
    assert caught.value.status == 403
    assert 'serviceaccount "ghost" not found' in json.loads(caught.value.body)["message"]


def test_strategic_merge_patch_merges_containers_by_name(
    core: kubernetes.client.CoreV1Api, namespace: str
) -> None:
    pod = {
        "metadata": {"name": "two"},
        "spec": {"containers": [{"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]},
    }
    core.create_namespaced_pod(namespace, pod)
    patched = core.patch_namespaced_pod(
        "two", namespace, {"spec": {"containers": [{"name": "b", "image": "y:2"}]}}
    )
    assert [(c.name, c.image) for c in patched.spec.containers] == [("a", "x:1"), ("b", "y:2")]
    with pytest.raises(ApiException) as caught:
        core.patch_namespaced_pod("two", namespace, {"spec": {"restartPolicy": "Never"}})
    assert caught.value.status == 422
    assert "pod updates may not change fields" in caught.value.body


def test_services_get_a_cluster_ip(core: kubernetes.client.CoreV1Api, namespace: str) -> None:
    service = {
        "metadata": {"name": "svc"},
        "spec": {"selector": {"a": "b"}, "ports": [{"port": 8080}]},
    }
    made = core.create_namespaced_service(namespace, service)
    assert made.spec.cluster_ip.startswith("10.")
    assert made.spec.ports[0].target_port == 8080
