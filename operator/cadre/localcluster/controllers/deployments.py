"""The Deployment and ReplicaSet controllers of the local cluster, as kube-controller-manager
runs them, reconciling level-based on every change of a Deployment, a ReplicaSet or a pod.

ReplicaSet: pods ``<set>-<random>`` from its template up to ``replicas`` (extra ones deleted,
not-ready first), status counts. Deployment: one ReplicaSet per pod template
(``<deployment>-<pod-template-hash>``, the hash also a label and selector of its pods), numbered
revisions (``deployment.kubernetes.io/revision``, the newest on the Deployment too), rolling
updates within ``maxSurge``/``maxUnavailable`` (25% each by default, surge rounded up and
unavailable down, as Kubernetes does) or ``Recreate``, old ReplicaSets kept up to
``revisionHistoryLimit`` (10), ``paused``, and the status and conditions ``kubectl rollout
status`` reads (``Available``, ``Progressing`` with ``NewReplicaSetAvailable``). A rollback
(``kubectl rollout undo``) is the client writing an old template back: its ReplicaSet is
reused and gets the next revision.

Left out: ``minReadySeconds`` (a ready pod counts as available at once) and
``progressDeadlineSeconds`` (no ``ProgressDeadlineExceeded``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math

from cadre.api.types import Obj
from cadre.localcluster.apiserver.cluster import Cluster
from cadre.localcluster.apiserver.metadata import now
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
HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
MERGE = "application/merge-patch+json"
_WATCHED = {("apps", "deployments"), ("apps", "replicasets"), ("", "pods")}


def _alive(pod: Obj) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and pod.get("status", {}).get(
        "phase"
    ) not in ("Succeeded", "Failed")


def _scaled(value: object, replicas: int, round_up: bool) -> int:
    """An intOrString of a rolling update (``2`` or ``"25%"``) as a pod count."""
    if isinstance(value, str) and value.endswith("%"):
        exact = int(value[:-1]) * replicas / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    return int(str(value))


def rolling_bounds(deployment: Obj) -> tuple[int, int]:
    """``(maxSurge, maxUnavailable)`` in pods; both zero is refused by validation, so at least
    one pod of room is kept, as Kubernetes does."""
    replicas = int(deployment["spec"].get("replicas", 1))
    rolling = (deployment["spec"].get("strategy") or {}).get("rollingUpdate") or {}
    surge = _scaled(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = _scaled(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def build_replica_set(deployment: Obj, revision: int) -> Obj:
    """The ReplicaSet of the Deployment's current template (pure)."""
    template = copy.deepcopy(deployment["spec"]["template"])
    digest = template_hash(deployment["spec"]["template"])
    labels = {**(template.get("metadata", {}).get("labels") or {}), HASH_LABEL: digest}
    template.setdefault("metadata", {})["labels"] = labels
    selector = copy.deepcopy(deployment["spec"].get("selector") or {})
    selector.setdefault("matchLabels", {})[HASH_LABEL] = digest
    meta = deployment["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{meta['name']}-{digest}",
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": {REVISION: str(revision)},
            "ownerReferences": [owner_ref(deployment)],
        },
        "spec": {"replicas": 0, "selector": selector, "template": template},
    }


def _matches(template: Obj, other: Obj) -> bool:
    """Whether a ReplicaSet's template is the Deployment's (ignoring the hash label)."""

    def plain(value: Obj) -> Obj:
        value = copy.deepcopy(value)
        (value.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
        return value

    return plain(template) == plain(other)


class DeploymentControllers:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._task: asyncio.Task[None] | None = None

    def _type(self, group: str, plural: str) -> ResourceType:
        rtype = self.cluster.registry.by_group_resource(group, plural)
        assert rtype is not None
        return rtype

    def start(self) -> None:
        queue = self.cluster.store.subscribe(ANY).queue
        for deployment in self.cluster.store.items(("apps", "deployments")):
            self._sync_deployment(deployment)
        self._task = asyncio.get_running_loop().create_task(self._run(queue))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, queue: asyncio.Queue[Change]) -> None:
        while True:
            change = await queue.get()
            if change.resource not in _WATCHED:
                continue
            try:
                self._react(change)
            except Exception:
                log.exception("deployment controller failed on %s", change.resource)

    def _react(self, change: Change) -> None:
        obj = change.obj
        deleted = change.type == "DELETED"
        if change.resource == ("apps", "deployments"):
            if not deleted:
                self._sync_deployment(obj)
            return
        if change.resource == ("apps", "replicasets") and not deleted:
            self._sync_replica_set(obj)
        for ref in obj["metadata"].get("ownerReferences") or []:
            found = self.cluster.store.by_uid(ref.get("uid", "")) if ref.get("controller") else None
            if found is None:
                continue
            resource, owner = found
            if resource == ("apps", "replicasets"):
                self._sync_replica_set(owner)
                if change.resource == ("", "pods"):
                    # A pod gone may be what a Recreate waits for, without any change of its
                    # ReplicaSet's status (terminating pods no longer count there).
                    self._syncowner_ref(owner)
            elif resource == ("apps", "deployments"):
                self._sync_deployment(owner)

    def _syncowner_ref(self, replica_set: Obj) -> None:
        for ref in replica_set["metadata"].get("ownerReferences") or []:
            found = self.cluster.store.by_uid(ref.get("uid", "")) if ref.get("controller") else None
            if found is not None and found[0] == ("apps", "deployments"):
                self._sync_deployment(found[1])

    # -- ReplicaSet ------------------------------------------------------------------------

    def _sync_replica_set(self, replica_set: Obj) -> None:
        if replica_set["metadata"].get("deletionTimestamp"):
            return
        replica_set = {**replica_set, "apiVersion": "apps/v1", "kind": "ReplicaSet"}
        namespace = replica_set["metadata"]["namespace"]
        pods_type = self._type("", "pods")
        pods = [p for p in self.cluster.store.items(("", "pods"), namespace)
                if controlled_by(p, replica_set) and _alive(p)]  # fmt: skip
        wanted = int(replica_set["spec"].get("replicas", 1))
        for _ in range(wanted - len(pods)):
            with contextlib.suppress(ApiError):
                self.cluster.create(pods_type, namespace, pod_from_template(replica_set))
        if len(pods) > wanted:
            # Not ready ones go first, then the newest, as the ReplicaSet controller ranks them.
            ranked = sorted(pods, key=lambda p: (pod_ready(p), p["metadata"]["creationTimestamp"]),
                            reverse=False)  # fmt: skip
            doomed = ranked[: len(pods) - wanted]
            for pod in doomed:
                with contextlib.suppress(ApiError):
                    self.cluster.delete(pods_type, namespace, pod["metadata"]["name"])
        for pod in self.cluster.store.items(("", "pods"), namespace):
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") and controlled_by(
                    pod, replica_set) and not pod["metadata"].get("deletionTimestamp"):  # fmt: skip
                with contextlib.suppress(ApiError):
                    self.cluster.delete(pods_type, namespace, pod["metadata"]["name"])
        current = [p for p in self.cluster.store.items(("", "pods"), namespace)
                   if controlled_by(p, replica_set) and _alive(p)]  # fmt: skip
        count = sum(1 for p in current if pod_ready(p))
        self._status(self._type("apps", "replicasets"), replica_set, {
            "replicas": len(current), "fullyLabeledReplicas": len(current),
            "readyReplicas": count, "availableReplicas": count,
            "observedGeneration": replica_set["metadata"].get("generation", 1),
        })  # fmt: skip

    # -- Deployment --------------------------------------------------------------------------

    def _sync_deployment(self, deployment: Obj) -> None:
        if deployment["metadata"].get("deletionTimestamp"):
            return
        deployment = {**deployment, "apiVersion": "apps/v1", "kind": "Deployment"}
        namespace = deployment["metadata"]["namespace"]
        sets_type = self._type("apps", "replicasets")
        owned = [
            rs for rs in self.cluster.store.items(("apps", "replicasets"), namespace)
            if controlled_by(rs, deployment) and not rs["metadata"].get("deletionTimestamp")
        ]  # fmt: skip
        revisions = [int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
                     for rs in owned]  # fmt: skip
        template = deployment["spec"]["template"]
        new = next((rs for rs in owned if _matches(rs["spec"]["template"], template)), None)
        latest = max(revisions, default=0)
        if new is None:
            if deployment["spec"].get("paused"):
                return
            built = build_replica_set(deployment, latest + 1)
            with contextlib.suppress(ApiError):
                new = self.cluster.create(sets_type, namespace, built).obj
            if new is None:
                return
            owned.append(new)
        elif int((new["metadata"].get("annotations") or {}).get(REVISION, "0")) < latest:
            # A rollback to an older template: its ReplicaSet becomes the newest revision.
            new = self._annotate(sets_type, new, {REVISION: str(latest + 1)})
        old = [rs for rs in owned if rs["metadata"]["uid"] != new["metadata"]["uid"]]
        replicas = int(deployment["spec"].get("replicas", 1))
        if not deployment["spec"].get("paused"):
            self._roll(deployment, new, old, replicas)
        self._prune(deployment, old)
        self._deployment_status(deployment, new, old, replicas)

    def _roll(self, deployment: Obj, new: Obj, old: list[Obj], replicas: int) -> None:
        sets_type = self._type("apps", "replicasets")
        strategy = (deployment["spec"].get("strategy") or {}).get("type", "RollingUpdate")
        surge, unavailable = rolling_bounds(deployment)
        if strategy == "Recreate":
            for rs in old:
                self._scale(sets_type, rs, 0, deployment, replicas, surge)
            # New pods only once every old one is gone, terminating ones included: never two
            # versions at once (what Cadre's operator Deployment relies on: one kopf only).
            namespace = deployment["metadata"]["namespace"]
            pods = self.cluster.store.items(("", "pods"), namespace)
            lingering = any(controlled_by(pod, rs) for rs in old for pod in pods)
            if not lingering:
                self._scale(sets_type, new, replicas, deployment, replicas, surge)
            return

        def spec(rs: Obj) -> int:
            return int(rs["spec"].get("replicas", 0))

        def available(rs: Obj) -> int:
            return int(rs.get("status", {}).get("availableReplicas", 0))

        all_pods = sum(spec(rs) for rs in [new, *old])
        wanted = spec(new)
        if wanted < replicas:  # scale the new one up within the surge
            wanted = min(replicas, wanted + max(replicas + surge - all_pods, 0))
        self._scale(sets_type, new, min(wanted, replicas), deployment, replicas, surge)
        # Old ones go down only as far as keeps replicas - maxUnavailable pods available:
        # their unavailable pods first, then available ones (oldest revision first), as the
        # Deployment controller's scaleDownOldReplicaSetsForRollingUpdate does.
        min_available = replicas - unavailable
        new_unavailable = max(spec(new) - available(new), 0)
        budget = all_pods - min_available - new_unavailable
        oldest_first = sorted(old, key=lambda r: int((r["metadata"].get("annotations") or {})
                                                     .get(REVISION, "0")))  # fmt: skip
        for rs in oldest_first:
            cut = min(max(spec(rs) - available(rs), 0), max(budget, 0))
            if cut:
                budget -= cut
                self._scale(sets_type, rs, spec(rs) - cut, deployment, replicas, surge)
        down = min(sum(available(rs) for rs in [new, *old]) - min_available, max(budget, 0))
        for rs in oldest_first:
            cut = min(spec(rs), max(down, 0))
            if cut:
                down -= cut
                self._scale(sets_type, rs, spec(rs) - cut, deployment, replicas, surge)

    def _scale(self, rtype: ResourceType, rs: Obj, count: int, deployment: Obj, replicas: int,
               surge: int) -> None:  # fmt: skip
        annotations = rs["metadata"].get("annotations") or {}
        wanted = {DESIRED: str(replicas), MAX_REPLICAS: str(replicas + surge)}
        if int(rs["spec"].get("replicas", 0)) == count and all(
                annotations.get(k) == v for k, v in wanted.items()):  # fmt: skip
            return
        patch = {"spec": {"replicas": count}, "metadata": {"annotations": wanted}}
        with contextlib.suppress(ApiError):
            stored = self.cluster.patch(rtype, rs["metadata"]["namespace"], rs["metadata"]["name"],
                                        MERGE, patch).obj  # fmt: skip
            rs.update(stored)

    def _annotate(self, rtype: ResourceType, rs: Obj, annotations: Obj) -> Obj:
        with contextlib.suppress(ApiError):
            return self.cluster.patch(rtype, rs["metadata"]["namespace"], rs["metadata"]["name"],
                                      MERGE,
                                      {"metadata": {"annotations": annotations}}).obj  # fmt: skip
        return rs

    def _prune(self, deployment: Obj, old: list[Obj]) -> None:
        limit = int(deployment["spec"].get("revisionHistoryLimit", 10))
        idle = [rs for rs in old if int(rs["spec"].get("replicas", 0)) == 0
                and int(rs.get("status", {}).get("replicas", 0)) == 0]  # fmt: skip
        idle.sort(key=lambda r: int((r["metadata"].get("annotations") or {}).get(REVISION, "0")))
        for rs in idle[: max(len(idle) - limit, 0)]:
            with contextlib.suppress(ApiError):
                self.cluster.delete(self._type("apps", "replicasets"), rs["metadata"]["namespace"],
                                    rs["metadata"]["name"])  # fmt: skip

    def _deployment_status(self, deployment: Obj, new: Obj, old: list[Obj],
                           replicas: int) -> None:  # fmt: skip
        every = [new, *old]

        def total(key: str, sets: list[Obj]) -> int:
            return sum(int(rs.get("status", {}).get(key, 0)) for rs in sets)

        count, available = total("replicas", every), total("availableReplicas", every)
        updated = total("replicas", [new])
        _, unavailable = rolling_bounds(deployment)
        complete = updated == replicas == count and total("availableReplicas", [new]) == replicas
        previous = {c["type"]: c for c in (deployment.get("status") or {}).get("conditions", [])}

        def condition(kind: str, status: str, reason: str, message: str) -> Obj:
            same = previous.get(kind, {})
            changed = (same.get("status"), same.get("reason")) != (status, reason)
            stamp = now() if changed else same.get("lastTransitionTime", now())
            updated = now() if changed else same.get("lastUpdateTime", stamp)
            return {"type": kind, "status": status, "reason": reason, "message": message,
                    "lastTransitionTime": stamp, "lastUpdateTime": updated}  # fmt: skip

        name = new["metadata"]["name"]
        enough = available >= replicas - unavailable
        conditions = [
            condition("Available", "True" if enough else "False",
                      "MinimumReplicasAvailable" if enough else "MinimumReplicasUnavailable",
                      "Deployment has minimum availability." if enough else
                      "Deployment does not have minimum availability."),
            condition("Progressing", "True",
                      "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated",
                      f'ReplicaSet "{name}" has successfully progressed.' if complete else
                      f'ReplicaSet "{name}" is progressing.'),
        ]  # fmt: skip
        revision = (new["metadata"].get("annotations") or {}).get(REVISION, "1")
        if (deployment["metadata"].get("annotations") or {}).get(REVISION) != revision:
            self._annotate(self._type("apps", "deployments"), deployment, {REVISION: revision})
        self._status(self._type("apps", "deployments"), deployment, {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": count, "updatedReplicas": updated,
            "readyReplicas": total("readyReplicas", every), "availableReplicas": available,
            "unavailableReplicas": max(count - available, 0), "conditions": conditions,
        })  # fmt: skip

    def _status(self, rtype: ResourceType, obj: Obj, status: Obj) -> None:
        current = obj.get("status") or {}
        if all(current.get(k) == v for k, v in status.items()):
            return
        if "conditions" in status and all(current.get(k) == v for k, v in status.items()
                                          if k != "conditions"):  # fmt: skip
            old = [{k: v for k, v in c.items() if not k.endswith("Time")}
                   for c in current.get("conditions", [])]  # fmt: skip
            new = [{k: v for k, v in c.items() if not k.endswith("Time")}
                   for c in status["conditions"]]  # fmt: skip
            if old == new:
                return
        meta = obj["metadata"]
        with contextlib.suppress(ApiError):
            self.cluster.patch(rtype, meta["namespace"], meta["name"], MERGE,
                               {"status": status}, "status")  # fmt: skip
