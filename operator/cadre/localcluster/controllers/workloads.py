"""The StatefulSet and Job controllers of the local cluster (the parts of
kube-controller-manager Cadre relies on), reconciling level-based on every change of a
StatefulSet, a Job or one of their pods.

StatefulSet: stable pod names ``<set>-<ordinal>``, a PVC per volumeClaimTemplate and ordinal
(``<template>-<set>-<ordinal>``, kept when pods go), a deleted or finished pod recreated with
the same name and volume, OrderedReady or Parallel creation, scaling down from the highest
ordinal, rolling updates one pod at a time when the template changes.
Job: pods up to ``parallelism`` until ``completions`` succeed; ``backoffLimit`` and
``activeDeadlineSeconds`` end it Failed; ``Complete``/``Failed`` conditions and counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import time

from cadre.api.types import Obj
from cadre.localcluster.apiserver.cluster import Cluster
from cadre.localcluster.apiserver.metadata import now, parse_time
from cadre.localcluster.apiserver.registry import ResourceType
from cadre.localcluster.apiserver.status import ApiError
from cadre.localcluster.apiserver.store import ANY, Change
from cadre.localcluster.controllers.ownership import (
    controlled_by,
    owner_ref,
    pod_from_template,
    pod_ready,
    template_hash,
)

log = logging.getLogger(__name__)
REVISION_LABEL = "controller-revision-hash"
_WATCHED = {
    ("apps", "statefulsets"),
    ("batch", "jobs"),
    ("", "pods"),
    ("", "services"),
}


def _selects(selector: Obj, pod: Obj) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def build_stateful_pod(sts: Obj, ordinal: int) -> Obj:
    """The pod for one ordinal: the template plus stable identity and its claims."""
    name = f"{sts['metadata']['name']}-{ordinal}"
    template = copy.deepcopy(sts["spec"]["template"])
    meta = template.get("metadata") or {}
    labels = {
        **(meta.get("labels") or {}),
        "statefulset.kubernetes.io/pod-name": name,
        "apps.kubernetes.io/pod-index": str(ordinal),
        REVISION_LABEL: f"{sts['metadata']['name']}-{template_hash(sts['spec']['template'])}",
    }
    spec = template.get("spec") or {}
    spec["hostname"] = name
    if sts["spec"].get("serviceName"):
        spec["subdomain"] = sts["spec"]["serviceName"]
    volumes = [v for v in spec.get("volumes", []) if v["name"] not in _claim_names(sts)]
    for claim in sts["spec"].get("volumeClaimTemplates", []):
        claim_name = f"{claim['metadata']['name']}-{name}"
        volumes.append(
            {"name": claim["metadata"]["name"], "persistentVolumeClaim": {"claimName": claim_name}}
        )
    if volumes:
        spec["volumes"] = volumes
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": meta.get("annotations") or {},
            "ownerReferences": [owner_ref(sts)],
        },
        "spec": spec,
    }


def _claim_names(sts: Obj) -> set[str]:
    return {c["metadata"]["name"] for c in sts["spec"].get("volumeClaimTemplates", [])}


def build_claim(sts: Obj, template: Obj, ordinal: int) -> Obj:
    name = f"{template['metadata']['name']}-{sts['metadata']['name']}-{ordinal}"
    labels = dict(sts["spec"].get("selector", {}).get("matchLabels") or {})
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": labels},
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


class WorkloadControllers:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None

    def _type(self, group: str, plural: str) -> ResourceType:
        rtype = self.cluster.registry.by_group_resource(group, plural)
        assert rtype is not None
        return rtype

    def start(self) -> None:
        subscription = self.cluster.store.subscribe(ANY)
        loop = asyncio.get_running_loop()
        self.resync()
        self._task = loop.create_task(self._run(subscription.queue))
        self._timer = loop.create_task(self._deadlines())

    async def stop(self) -> None:
        for task in (self._task, self._timer):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _run(self, queue: asyncio.Queue[Change]) -> None:
        while True:
            change = await queue.get()
            if change.resource not in _WATCHED:
                continue
            try:
                self._react(change)
            except Exception:
                log.exception("workload controller failed on %s", change.resource)

    async def _deadlines(self) -> None:
        """Jobs' activeDeadlineSeconds pass without any write: look once a second."""
        while True:
            await asyncio.sleep(1.0)
            for job in self.cluster.store.items(("batch", "jobs")):
                if job["spec"].get("activeDeadlineSeconds") is not None:
                    self._sync_job(job)

    # -- Endpoints -----------------------------------------------------------------------

    def _sync_endpoints(self, service: Obj) -> None:
        """The endpoints controller: a Service's ready and not-ready pod addresses."""
        selector = service["spec"].get("selector")
        if not selector or service["metadata"].get("deletionTimestamp"):
            return
        namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
        ready: list[Obj] = []
        not_ready: list[Obj] = []
        for pod in self.cluster.store.items(("", "pods"), namespace):
            labels = pod["metadata"].get("labels") or {}
            address = pod.get("status", {}).get("podIP")
            if not address or any(labels.get(k) != v for k, v in selector.items()):
                continue
            if pod["metadata"].get("deletionTimestamp"):
                continue
            ref = {
                "kind": "Pod",
                "namespace": namespace,
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            }
            (ready if pod_ready(pod) else not_ready).append({"ip": address, "targetRef": ref})
        ports = [
            {
                "name": p.get("name", ""),
                "port": self._target_port(p, namespace, selector),
                "protocol": p.get("protocol", "TCP"),
            }
            for p in service["spec"].get("ports", [])
        ]
        subset: Obj = {"ports": ports}
        if ready:
            subset["addresses"] = ready
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        subsets = [subset] if ready or not_ready else []
        body = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": name, "labels": service["metadata"].get("labels") or {}},
            "subsets": subsets,
        }
        endpoints = self._type("", "endpoints")
        current = self.cluster.store.get(("", "endpoints"), namespace, name)
        with contextlib.suppress(ApiError):
            if current is None:
                self.cluster.create(endpoints, namespace, body)
            elif current.get("subsets", []) != subsets:
                self.cluster.patch(
                    endpoints, namespace, name, "application/merge-patch+json", {"subsets": subsets}
                )

    def _target_port(self, port: Obj, namespace: str, selector: Obj) -> int:
        target = port.get("targetPort", port.get("port"))
        if isinstance(target, int):
            return target
        for pod in self.cluster.store.items(("", "pods"), namespace):
            labels = pod["metadata"].get("labels") or {}
            if all(labels.get(k) == v for k, v in selector.items()):
                for container in pod["spec"].get("containers", []):
                    for declared in container.get("ports", []):
                        if declared.get("name") == target:
                            return int(declared["containerPort"])
        return int(port.get("port", 0))

    def resync(self) -> None:
        for sts in self.cluster.store.items(("apps", "statefulsets")):
            self._sync_statefulset(sts)
        for job in self.cluster.store.items(("batch", "jobs")):
            self._sync_job(job)
        for service in self.cluster.store.items(("", "services")):
            self._sync_endpoints(service)

    def _react(self, change: Change) -> None:
        obj = change.obj
        if change.resource == ("apps", "statefulsets") and change.type != "DELETED":
            self._sync_statefulset(obj)
        elif change.resource == ("batch", "jobs") and change.type != "DELETED":
            self._sync_job(obj)
        elif change.resource == ("", "services") and change.type != "DELETED":
            self._sync_endpoints(obj)
        elif change.resource == ("", "pods"):
            # Only the Services that select this pod (before or after the change): each sync
            # reads every pod of the namespace, so syncing them all would be quadratic.
            versions = [obj] if change.old is None else [obj, change.old]
            for service in self.cluster.store.items(("", "services"), obj["metadata"]["namespace"]):
                selector = service["spec"].get("selector") or {}
                if selector and any(_selects(selector, pod) for pod in versions):
                    self._sync_endpoints(service)
            for ref in obj["metadata"].get("ownerReferences") or []:
                found = self.cluster.store.by_uid(ref.get("uid", ""))
                if found is None or not ref.get("controller"):
                    continue
                resource, owner = found
                if resource == ("apps", "statefulsets"):
                    self._sync_statefulset(owner)
                elif resource == ("batch", "jobs"):
                    self._sync_job(owner)

    # -- StatefulSet ---------------------------------------------------------------------

    def _sync_statefulset(self, sts: Obj) -> None:
        if sts["metadata"].get("deletionTimestamp"):
            return
        sts = {**sts, "apiVersion": "apps/v1", "kind": "StatefulSet"}
        namespace = sts["metadata"]["namespace"]
        pods_type, claims_type = self._type("", "pods"), self._type("", "persistentvolumeclaims")
        pods = {
            p["metadata"]["name"]: p
            for p in self.cluster.store.items(("", "pods"), namespace)
            if controlled_by(p, sts)
        }
        replicas = int(sts["spec"].get("replicas", 1))
        ordered = sts["spec"].get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        revision = f"{sts['metadata']['name']}-{template_hash(sts['spec']['template'])}"
        for ordinal in range(replicas):
            name = f"{sts['metadata']['name']}-{ordinal}"
            pod = pods.get(name)
            if pod is not None and pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                if not pod["metadata"].get("deletionTimestamp"):
                    self._delete(pods_type, namespace, name)
                pod = None
            if pod is None:
                for template in sts["spec"].get("volumeClaimTemplates", []):
                    with contextlib.suppress(ApiError):
                        self.cluster.create(
                            claims_type, namespace, build_claim(sts, template, ordinal)
                        )
                if name not in pods:
                    with contextlib.suppress(ApiError):
                        self.cluster.create(pods_type, namespace, build_stateful_pod(sts, ordinal))
                if ordered:
                    break
                continue
            if ordered and not (pod_ready(pod) and not pod["metadata"].get("deletionTimestamp")):
                break
        for name, pod in pods.items():
            ordinal = int(name.rsplit("-", 1)[1]) if name.rsplit("-", 1)[1].isdigit() else -1
            if ordinal >= replicas and not pod["metadata"].get("deletionTimestamp"):
                self._delete(pods_type, namespace, name)
        current = [p for p in pods.values() if not p["metadata"].get("deletionTimestamp")]
        stale = [
            p for p in current if p["metadata"].get("labels", {}).get(REVISION_LABEL) != revision
        ]
        if stale and all(pod_ready(p) for p in current) and len(current) == replicas:
            newest = max(stale, key=lambda p: int(p["metadata"]["name"].rsplit("-", 1)[1]))
            self._delete(pods_type, namespace, newest["metadata"]["name"])
        ready = sum(1 for p in current if pod_ready(p))
        updated = len(current) - len(stale)
        self._status(
            self._type("apps", "statefulsets"),
            sts,
            {
                "observedGeneration": sts["metadata"].get("generation", 1),
                "replicas": len(current), "readyReplicas": ready, "availableReplicas": ready,
                "currentReplicas": updated, "updatedReplicas": updated,
                "currentRevision": revision, "updateRevision": revision,
            },
        )  # fmt: skip

    # -- Job -------------------------------------------------------------------------------

    def _sync_job(self, job: Obj) -> None:
        if job["metadata"].get("deletionTimestamp"):
            return
        job = {**job, "apiVersion": "batch/v1", "kind": "Job"}
        status = dict(job.get("status") or {})
        finished = any(
            c["type"] in ("Complete", "Failed") and c["status"] == "True"
            for c in status.get("conditions", [])
        )
        namespace = job["metadata"]["namespace"]
        pods_type = self._type("", "pods")
        pods = [
            p for p in self.cluster.store.items(("", "pods"), namespace) if controlled_by(p, job)
        ]
        active = [
            p
            for p in pods
            if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            and not p["metadata"].get("deletionTimestamp")
        ]
        succeeded = sum(1 for p in pods if p.get("status", {}).get("phase") == "Succeeded")
        failed = sum(1 for p in pods if p.get("status", {}).get("phase") == "Failed")
        spec = job["spec"]
        status.setdefault("startTime", now())
        failure = None
        if failed > int(spec.get("backoffLimit", 6)):
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        deadline = spec.get("activeDeadlineSeconds")
        if (
            deadline is not None
            and time.time() - parse_time(status["startTime"]).timestamp() >= deadline
        ):
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline")
        completions = int(spec.get("completions", 1))
        if not finished:
            if failure is not None:
                for pod in active:
                    self._delete(pods_type, namespace, pod["metadata"]["name"])
                active = []
                status["conditions"] = [self._condition("Failed", *failure)]
            elif succeeded >= completions:
                status["conditions"] = [self._condition("Complete", "", "")]
                status["completionTime"] = now()
            elif not spec.get("suspend"):
                wanted = min(int(spec.get("parallelism", 1)), completions - succeeded) - len(active)
                for _ in range(max(wanted, 0)):
                    pod = pod_from_template(job)
                    with contextlib.suppress(ApiError):
                        active.append(self.cluster.create(pods_type, namespace, pod).obj)
        status.update(
            active=len(active),
            succeeded=succeeded,
            failed=failed,
            ready=sum(1 for p in active if pod_ready(p)),
        )
        self._status(self._type("batch", "jobs"), job, status)

    @staticmethod
    def _condition(kind: str, reason: str, message: str) -> Obj:
        found: Obj = {
            "type": kind,
            "status": "True",
            "lastProbeTime": now(),
            "lastTransitionTime": now(),
        }
        if reason:
            found.update(reason=reason, message=message)
        return found

    # -- writes ----------------------------------------------------------------------------

    def _delete(self, rtype: ResourceType, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiError):
            self.cluster.delete(rtype, namespace, name)

    def _status(self, rtype: ResourceType, obj: Obj, status: Obj) -> None:
        if all(obj.get("status", {}).get(k) == v for k, v in status.items()):
            return
        meta = obj["metadata"]
        with contextlib.suppress(ApiError):
            self.cluster.patch(
                rtype,
                meta["namespace"],
                meta["name"],
                "application/merge-patch+json",
                {"status": status},
                "status",
            )
