"""StatefulSets and Jobs in the local cluster, as Cadre uses them: the harness is a StatefulSet
of one pod with a volume that must survive the pod."""

from __future__ import annotations

from typing import Any

from tests.localcluster.conftest import Http, Kubectl
from tests.localcluster.node.conftest import IMAGE, eventually, pod_status

WRITER = """
import os, time
path = os.path.join(os.environ["DATA"], "boots")
with open(path, "a") as handle:
    handle.write("boot\\n")
print(open(path).read().count("boot"), flush=True)
time.sleep(300)
"""


def _statefulset(name: str, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "main",
                            "image": IMAGE,
                            "command": ["python3", "-c", WRITER],
                            "env": [{"name": "DATA", "value": "/data"}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
            **spec,
        },
    }


def _log(http: Http, namespace: str, pod: str) -> str:
    response = http("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log")
    return response.text if response.status_code == 200 else ""


def test_a_statefulset_pod_comes_back_with_the_same_volume(http: Http, namespace: str) -> None:
    base = f"/apis/apps/v1/namespaces/{namespace}/statefulsets"
    assert http("POST", base, _statefulset("harness")).status_code == 201
    eventually(lambda: _log(http, namespace, "harness-0").strip() == "1")
    claim = http(
        "GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/data-harness-0"
    ).json()
    assert claim["status"]["phase"] == "Bound"
    first_uid = http("GET", f"/api/v1/namespaces/{namespace}/pods/harness-0").json()["metadata"][
        "uid"
    ]
    http("DELETE", f"/api/v1/namespaces/{namespace}/pods/harness-0")

    def replaced() -> bool:
        pod = http("GET", f"/api/v1/namespaces/{namespace}/pods/harness-0")
        return pod.status_code == 200 and pod.json()["metadata"]["uid"] != first_uid

    eventually(replaced)
    eventually(lambda: _log(http, namespace, "harness-0").strip() == "2")  # same volume, 2nd boot


def test_a_statefulset_scales_up_in_order_and_down_from_the_top(
    kubectl: Kubectl, http: Http, namespace: str
) -> None:
    base = f"/apis/apps/v1/namespaces/{namespace}/statefulsets"
    http("POST", base, _statefulset("web", replicas=3))

    def running() -> list[str]:
        pods = http("GET", f"/api/v1/namespaces/{namespace}/pods?labelSelector=app%3Dweb").json()[
            "items"
        ]
        return sorted(
            p["metadata"]["name"] for p in pods if p.get("status", {}).get("phase") == "Running"
        )

    eventually(lambda: running() == ["web-0", "web-1", "web-2"])
    eventually(
        lambda: http("GET", base + "/web").json().get("status", {}).get("readyReplicas") == 3
    )
    kubectl("scale", "statefulset", "web", "-n", namespace, "--replicas=1")
    eventually(
        lambda: (
            running() == ["web-0"]
            and http("GET", f"/api/v1/namespaces/{namespace}/pods/web-2").status_code == 404
        )
    )
    assert (
        http("GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/data-web-2").status_code
        == 200
    )


def test_a_template_change_rolls_the_pods(http: Http, namespace: str) -> None:
    base = f"/apis/apps/v1/namespaces/{namespace}/statefulsets"
    http("POST", base, _statefulset("roll"))
    eventually(lambda: _log(http, namespace, "roll-0").strip() == "1")
    patch = {"spec": {"template": {"metadata": {"annotations": {"cadre.dev/config-hash": "v2"}}}}}
    http("PATCH", base + "/roll", patch, "application/merge-patch+json")

    def rolled() -> bool:
        pod = http("GET", f"/api/v1/namespaces/{namespace}/pods/roll-0")
        return (
            pod.status_code == 200
            and pod.json()["metadata"].get("annotations", {}).get("cadre.dev/config-hash") == "v2"
        )

    eventually(rolled)
    eventually(lambda: _log(http, namespace, "roll-0").strip() == "2")


def _job(name: str, script: str, grace: int = 30, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": grace,
                    "containers": [
                        {"name": "main", "image": IMAGE, "command": ["python3", "-c", script]}
                    ],
                }
            },
            **spec,
        },
    }


def _condition(http: Http, namespace: str, name: str) -> dict[str, Any] | None:
    job = http("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}").json()
    conditions = job.get("status", {}).get("conditions") or []
    return conditions[0] if conditions else None


def test_a_job_completes(kubectl: Kubectl, http: Http, namespace: str) -> None:
    http(
        "POST",
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        _job("ok", "print('done')", completions=2),
    )
    kubectl("wait", "job/ok", "-n", namespace, "--for=condition=Complete", "--timeout=30s")
    status = http("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/ok").json()["status"]
    assert status["succeeded"] == 2
    assert status["active"] == 0
    assert "completionTime" in status


def test_a_failing_job_stops_at_its_backoff_limit(http: Http, namespace: str) -> None:
    http(
        "POST",
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        _job("bad", "raise SystemExit(1)", backoffLimit=1),
    )
    condition = eventually(lambda: _condition(http, namespace, "bad"))
    assert condition["type"] == "Failed"
    assert condition["reason"] == "BackoffLimitExceeded"
    assert (
        http("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs/bad").json()["status"]["failed"]
        == 2
    )


def test_a_job_past_its_deadline_fails_and_stops_its_pods(http: Http, namespace: str) -> None:
    http(
        "POST",
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        # PID 1 of a container ignores SIGTERM it does not handle, as on a real node: the
        # pod ends at its grace period, kept short here.
        _job("slow", "import time; time.sleep(300)", activeDeadlineSeconds=1, grace=1),
    )
    condition = eventually(lambda: _condition(http, namespace, "slow"))
    assert condition["reason"] == "DeadlineExceeded"

    def no_running_pods() -> bool:
        pods = http("GET", f"/api/v1/namespaces/{namespace}/pods").json()["items"]
        return not [
            p
            for p in pods
            if p["metadata"]["name"].startswith("slow-")
            and pod_status(http, namespace, p["metadata"]["name"]).get("phase") == "Running"
        ]

    eventually(no_running_pods)
