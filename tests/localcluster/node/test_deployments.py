"""Deployments and ReplicaSets in the local cluster, driven by the real kubectl as a user would:
a Deployment gets its pods through a ReplicaSet, ``kubectl rollout status`` waits for it, a
changed template rolls within maxSurge/maxUnavailable, revisions are kept and rolled back,
scale works, and ``kubectl get`` prints the usual columns."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.localcluster.conftest import Http, Kubectl
from tests.localcluster.node.conftest import IMAGE, eventually

SLEEPER = "import time; time.sleep(300)"


def _deployment(name: str, replicas: int, version: str, **strategy: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy or {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": {"version": version}},
                "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                    "name": "main", "image": IMAGE, "command": ["python3", "-c", SLEEPER],
                    "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 1},
                }]},
            },
        },
    }  # fmt: skip


def _apply(kubectl: Kubectl, namespace: str, doc: dict[str, Any]) -> None:
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(doc))


def _pods(http: Http, namespace: str, app: str) -> list[dict[str, Any]]:
    listed = http("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3D{app}")
    return [p for p in listed.json()["items"] if not p["metadata"].get("deletionTimestamp")]


def test_a_deployment_rolls_out_rolls_over_and_rolls_back(
    kubectl: Kubectl, http: Http, namespace: str
) -> None:
    _apply(kubectl, namespace, _deployment("web", 2, "one"))
    kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s")
    first = _pods(http, namespace, "web")
    assert len(first) == 2
    owners = {p["metadata"]["ownerReferences"][0]["kind"] for p in first}
    assert owners == {"ReplicaSet"}
    # A new template: with maxUnavailable 0 and maxSurge 1 never fewer than 2 ready, never
    # more than 3 pods; watched while it rolls.
    _apply(kubectl, namespace, _deployment("web", 2, "two"))
    most = 0

    def rolled() -> bool:
        nonlocal most
        pods = _pods(http, namespace, "web")
        most = max(most, len(pods))
        versions = {p["metadata"]["annotations"]["version"] for p in pods}
        return versions == {"two"} and len(pods) == 2

    eventually(rolled, timeout=60)
    assert most <= 3
    kubectl("rollout", "status", "deployment/web", "-n", namespace, "--timeout=60s")
    history = kubectl("rollout", "history", "deployment/web", "-n", namespace).stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    kubectl("rollout", "undo", "deployment/web", "-n", namespace)
    eventually(lambda: {p["metadata"]["annotations"]["version"]
                        for p in _pods(http, namespace, "web")} == {"one"}, timeout=60)  # fmt: skip
    deployment = http("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/web").json()
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    sets = http("GET", f"/apis/apps/v1/namespaces/{namespace}/replicasets").json()["items"]
    assert len(sets) == 2  # the rollback reused revision 1's ReplicaSet


def test_scale_and_the_tables_users_read(kubectl: Kubectl, http: Http, namespace: str) -> None:
    _apply(kubectl, namespace, _deployment("api", 1, "one", type="Recreate"))
    kubectl("rollout", "status", "deployment/api", "-n", namespace, "--timeout=60s")
    kubectl("scale", "deployment/api", "--replicas=3", "-n", namespace)
    eventually(lambda: len(_pods(http, namespace, "api")) == 3, timeout=60)
    kubectl("rollout", "status", "deployment/api", "-n", namespace, "--timeout=60s")
    table = kubectl("get", "deployments", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table[1].split()[:4] == ["api", "3/3", "3", "3"]
    sets = kubectl("get", "replicasets", "-n", namespace).stdout.splitlines()
    assert sets[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    assert sets[1].split()[1:4] == ["3", "3", "3"]
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "api.1"},
             "involvedObject": {"kind": "Deployment", "name": "api", "namespace": namespace},
             "reason": "ScalingReplicaSet", "message": "Scaled up", "type": "Normal"}  # fmt: skip
    http("POST", f"/api/v1/namespaces/{namespace}/events", event)
    events = kubectl("get", "events", "-n", namespace).stdout.splitlines()
    assert events[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert "deployment/api" in events[1]
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/api/scale"
    scale = json.loads(kubectl("get", "--raw", path).stdout)
    assert scale["spec"]["replicas"] == 3
