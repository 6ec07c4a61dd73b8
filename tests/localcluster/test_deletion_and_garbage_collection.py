"""Deletion as Kubernetes does it: finalizers hold an object, owner references cascade
(background, foreground, orphan), and a deleted namespace empties before it goes."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.localcluster.conftest import Http, task_manifest


def _eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _owned_configmap(name: str, owner: dict) -> dict:  # type: ignore[type-arg]
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": True,
        "controller": True,
    }
    return {"metadata": {"name": name, "ownerReferences": [ref]}}


def test_a_finalizer_holds_the_object_until_removed(http: Http, namespace: str) -> None:
    base = f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks"
    manifest = task_manifest("held")
    manifest["metadata"]["finalizers"] = ["cadre.dev/cleanup"]  # type: ignore[index]
    http("POST", base, manifest)
    deleting = http("DELETE", base + "/held")
    assert deleting.status_code == 202
    held = http("GET", base + "/held").json()
    assert held["metadata"]["deletionTimestamp"]
    assert held["metadata"]["generation"] == 2
    added = http(
        "PATCH",
        base + "/held",
        {"metadata": {"finalizers": ["cadre.dev/cleanup", "other"]}},
        "application/merge-patch+json",
    )
    assert added.status_code == 422
    assert "no new finalizers can be added" in added.json()["message"]
    http(
        "PATCH", base + "/held", {"metadata": {"finalizers": None}}, "application/merge-patch+json"
    )
    assert http("GET", base + "/held").status_code == 404


def test_deleting_an_owner_deletes_its_dependents(http: Http, namespace: str) -> None:
    owner = http(
        "POST", f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks", task_manifest("owner")
    ).json()
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    http("POST", configmaps, _owned_configmap("child", owner))
    assert (
        http("DELETE", f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks/owner").status_code
        == 200
    )
    _eventually(lambda: http("GET", configmaps + "/child").status_code == 404)


def test_a_dependent_with_another_owner_survives(http: Http, namespace: str) -> None:
    tasks = f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks"
    first = http("POST", tasks, task_manifest("first")).json()
    second = http("POST", tasks, task_manifest("second")).json()
    shared = _owned_configmap("shared", first)
    shared["metadata"]["ownerReferences"].append(
        _owned_configmap("x", second)["metadata"]["ownerReferences"][0] | {"controller": False}
    )
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    http("POST", configmaps, shared)
    http("DELETE", tasks + "/first")
    _eventually(
        lambda: len(http("GET", configmaps + "/shared").json()["metadata"]["ownerReferences"]) == 1
    )
    assert (
        http("GET", configmaps + "/shared").json()["metadata"]["ownerReferences"][0]["name"]
        == "second"
    )


def test_orphan_deletion_keeps_dependents_without_the_reference(http: Http, namespace: str) -> None:
    tasks = f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks"
    owner = http("POST", tasks, task_manifest("parent")).json()
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    http("POST", configmaps, _owned_configmap("orphan", owner))
    http("DELETE", tasks + "/parent", {"propagationPolicy": "Orphan"})
    _eventually(lambda: http("GET", tasks + "/parent").status_code == 404)
    kept = http("GET", configmaps + "/orphan").json()
    assert "ownerReferences" not in kept["metadata"]


def test_foreground_deletion_removes_dependents_first(http: Http, namespace: str) -> None:
    tasks = f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks"
    owner = http("POST", tasks, task_manifest("fg")).json()
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    child = _owned_configmap("fg-child", owner)
    child["metadata"]["finalizers"] = ["cadre.dev/slow"]
    http("POST", configmaps, child)
    assert http("DELETE", tasks + "/fg", {"propagationPolicy": "Foreground"}).status_code == 202
    _eventually(
        lambda: bool(
            http("GET", configmaps + "/fg-child").json()["metadata"].get("deletionTimestamp")
        )
    )
    assert http("GET", tasks + "/fg").json()["metadata"]["finalizers"] == ["foregroundDeletion"]
    http(
        "PATCH",
        configmaps + "/fg-child",
        {"metadata": {"finalizers": None}},
        "application/merge-patch+json",
    )
    _eventually(lambda: http("GET", tasks + "/fg").status_code == 404)


def test_a_dependent_whose_owner_never_existed_is_collected(http: Http, namespace: str) -> None:
    ghost = {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "ghost", "uid": "00000000-0000-0000-0000-000000000000"},
    }
    configmaps = f"/api/v1/namespaces/{namespace}/configmaps"
    http("POST", configmaps, _owned_configmap("dangling", ghost))
    _eventually(lambda: http("GET", configmaps + "/dangling").status_code == 404)


def test_deleting_a_namespace_empties_it_then_removes_it(http: Http, namespace: str) -> None:
    tasks = f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks"
    manifest = task_manifest("slow")
    manifest["metadata"]["finalizers"] = ["cadre.dev/cleanup"]  # type: ignore[index]
    http("POST", tasks, manifest)
    assert http("DELETE", f"/api/v1/namespaces/{namespace}").status_code == 202
    _eventually(
        lambda: (
            http("GET", f"/api/v1/namespaces/{namespace}").json()["status"]["phase"]
            == "Terminating"
        )
    )
    refused = http("POST", tasks, task_manifest("late"))
    assert refused.status_code == 403
    assert "because it is being terminated" in refused.json()["message"]
    _eventually(
        lambda: http("GET", f"/api/v1/namespaces/{namespace}/configmaps").json()["items"] == []
    )
    assert http("GET", f"/api/v1/namespaces/{namespace}").status_code == 200
    http(
        "PATCH", tasks + "/slow", {"metadata": {"finalizers": None}}, "application/merge-patch+json"
    )
    _eventually(lambda: http("GET", f"/api/v1/namespaces/{namespace}").status_code == 404)


def test_deleting_a_crd_deletes_its_objects(http: Http, namespace: str) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    assert (
        http("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd).status_code
        == 201
    )
    widgets = f"/apis/example.com/v1/namespaces/{namespace}/widgets"
    made = http(
        "POST",
        widgets,
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"size": 2, "extra": 1},
        },
    )
    assert made.status_code == 201
    assert made.json()["spec"] == {"size": 2}  # pruned
    assert (
        http(
            "POST",
            widgets,
            {
                "apiVersion": "example.com/v1",
                "kind": "Widget",
                "metadata": {"name": "v"},
                "spec": {"size": 0},
            },
        ).status_code
        == 422
    )
    http("DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
    _eventually(
        lambda: (
            http(
                "GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
            ).status_code
            == 404
        )
    )
    assert http("GET", widgets).status_code == 404
