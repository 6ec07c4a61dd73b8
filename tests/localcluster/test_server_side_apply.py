"""Server-side apply in the local API server, as Kubernetes documents it: the real kubectl's
``apply --server-side`` creates, re-applies without a write, reports conflicts with another
manager naming the field (exit 1), takes them with ``--force-conflicts``, removes what a
manager stops applying, and merges list-maps by key; every write records its manager in
``managedFields``."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from cadre.localcluster.apiserver import fieldmanager

from tests.localcluster.conftest import REPO, Http, Kubectl


def _config_map(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def _apply(kubectl: Kubectl, namespace: str, doc: dict[str, Any], *flags: str,
           check: bool = True) -> Any:  # fmt: skip
    return kubectl("apply", "--server-side", "-n", namespace, *flags, "-f", "-",
                   input=yaml.safe_dump(doc), check=check)  # fmt: skip


def _get(http: Http, namespace: str, name: str) -> dict[str, Any]:
    response = http("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}")
    return response.json()  # type: ignore[no-any-return]


def test_apply_creates_then_a_reapply_writes_nothing(
    kubectl: Kubectl, http: Http, namespace: str
) -> None:
    out = _apply(kubectl, namespace, _config_map("settings", a="1", b="2")).stdout
    assert "configmap/settings serverside-applied" in out
    first = _get(http, namespace, "settings")
    (entry,) = first["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"]) == ("kubectl", "Apply")
    assert entry["fieldsV1"] == {"f:data": {"f:a": {}, "f:b": {}}}
    _apply(kubectl, namespace, _config_map("settings", a="1", b="2"))
    again = _get(http, namespace, "settings")
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]


def test_a_conflict_names_the_other_manager_and_the_field_until_forced(
    kubectl: Kubectl, http: Http, namespace: str
) -> None:
    _apply(kubectl, namespace, _config_map("shared", a="1"))
    refused = _apply(kubectl, namespace, _config_map("shared", a="2"), "--field-manager=other",
                     check=False)  # fmt: skip
    assert refused.returncode == 1
    assert 'conflict with "kubectl"' in refused.stderr
    assert ".data.a" in refused.stderr
    assert _get(http, namespace, "shared")["data"] == {"a": "1"}  # nothing lost
    _apply(kubectl, namespace, _config_map("shared", a="2"), "--field-manager=other",
           "--force-conflicts")  # fmt: skip
    taken = _get(http, namespace, "shared")
    assert taken["data"] == {"a": "2"}
    owners = {e["manager"]: e["fieldsV1"] for e in taken["metadata"]["managedFields"]}
    assert owners == {"other": {"f:data": {"f:a": {}}}}  # kubectl owned only a: it lost it


def test_the_same_value_is_shared_and_a_dropped_field_is_removed(
    kubectl: Kubectl, http: Http, namespace: str
) -> None:
    _apply(kubectl, namespace, _config_map("both", a="1", b="2"))
    _apply(kubectl, namespace, _config_map("both", a="1"), "--field-manager=second")
    shared = _get(http, namespace, "both")
    owners = {e["manager"]: e["fieldsV1"] for e in shared["metadata"]["managedFields"]}
    assert owners["second"] == {"f:data": {"f:a": {}}}
    assert owners["kubectl"] == {"f:data": {"f:a": {}, "f:b": {}}}
    # kubectl stops applying a and b: b (its alone) goes, a (shared) stays.
    _apply(kubectl, namespace, _config_map("both", c="3"))
    assert _get(http, namespace, "both")["data"] == {"a": "1", "c": "3"}


def test_an_update_takes_ownership_of_what_it_changed(
    kubectl: Kubectl, http: Http, namespace: str
) -> None:
    _apply(kubectl, namespace, _config_map("edited", a="1", b="2"))
    patch = json.dumps({"data": {"a": "9"}})
    kubectl("patch", "configmap", "edited", "-n", namespace, "--type=merge", "-p", patch)
    owners = {(e["manager"], e["operation"]): e["fieldsV1"]
              for e in _get(http, namespace, "edited")["metadata"]["managedFields"]}  # fmt: skip
    assert owners[("kubectl-patch", "Update")] == {"f:data": {"f:a": {}}}
    assert owners[("kubectl", "Apply")] == {"f:data": {"f:b": {}}}
    refused = _apply(kubectl, namespace, _config_map("edited", a="1", b="2"), check=False)
    assert 'conflict with "kubectl-patch"' in refused.stderr


def test_list_maps_merge_by_key_in_a_deployment(
    kubectl: Kubectl, http: Http, namespace: str
) -> None:
    def deployment(containers: list[dict[str, Any]]) -> dict[str, Any]:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": containers}}}}  # fmt: skip

    _apply(kubectl, namespace, deployment([{"name": "app", "image": "ghcr.io/cadre-dev/cadre"}]))
    sidecar = [{"name": "sidecar", "image": "ghcr.io/cadre-dev/sandbox"}]
    _apply(kubectl, namespace, deployment(sidecar), "--field-manager=mesh")
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/web"
    live = http("GET", path).json()
    names = [c["name"] for c in live["spec"]["template"]["spec"]["containers"]]
    assert names == ["app", "sidecar"]
    mesh = next(e for e in live["metadata"]["managedFields"] if e["manager"] == "mesh")
    containers = mesh["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert set(containers) == {'k:{"name":"sidecar"}'}


def test_an_apply_without_a_field_manager_or_of_another_kind_is_refused(
    http: Http, namespace: str
) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps/x"
    apply_yaml = "application/apply-patch+yaml"
    headers = {"User-Agent": ""}
    body = yaml.safe_dump(_config_map("x", a="1"))
    missing = http("PATCH", path, body, apply_yaml, headers=headers)
    assert missing.status_code == 400
    assert "fieldManager is required" in missing.json()["message"]
    wrong = http("PATCH", path + "?fieldManager=t", body.replace("ConfigMap", "Secret"),
                 apply_yaml, headers=headers)  # fmt: skip
    assert wrong.status_code == 400
    assert "apiVersion and kind must be v1 and ConfigMap" in wrong.json()["message"]


def test_the_install_manifests_apply_server_side_and_again_with_no_write(
    kubectl: Kubectl, http: Http
) -> None:
    manifests = REPO / "manifests" / "cadre.yaml"
    first = kubectl("apply", "--server-side", "-f", str(manifests))
    assert "serverside-applied" in first.stdout
    docs = [d for d in yaml.safe_load_all(manifests.read_text()) if d]
    before = _versions(kubectl, docs)
    kubectl("apply", "--server-side", "-f", str(manifests))
    assert _versions(kubectl, docs) == before  # no object written again


def _versions(kubectl: Kubectl, docs: list[dict[str, Any]]) -> dict[str, str]:
    out = {}
    for doc in docs:
        namespace = doc["metadata"].get("namespace")
        args = ["get", doc["kind"].lower() + "." + (doc["apiVersion"].split("/")[0]
                if "/" in doc["apiVersion"] else ""), doc["metadata"]["name"], "-o",
                "jsonpath={.metadata.resourceVersion}"]  # fmt: skip
        args[1] = args[1].rstrip(".")
        if namespace:
            args += ["-n", namespace]
        out[f"{doc['kind']}/{doc['metadata']['name']}"] = kubectl(*args).stdout
    return out


@pytest.mark.parametrize(
    ("paths", "fields_v1"),
    [
        ({("f:data", "f:a")}, {"f:data": {"f:a": {}}}),
        ({("f:spec", 'k:{"name":"a"}'), ("f:spec", 'k:{"name":"a"}', "f:image")},
         {"f:spec": {'k:{"name":"a"}': {".": {}, "f:image": {}}}}),
    ],
)  # fmt: skip
def test_field_sets_encode_as_fields_v1_and_back(paths: set[Any], fields_v1: Any) -> None:
    assert fieldmanager.encode(paths) == fields_v1
    assert fieldmanager.decode(fields_v1) == paths
