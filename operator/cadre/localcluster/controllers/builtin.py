"""The controllers whose behaviour Kubernetes clients take for granted, run inside the local API
server: the garbage collector (ownerReferences: background, foreground and orphan deletion),
the namespace lifecycle (a deleted namespace empties, then goes), the service-account and
root-CA publishers (every namespace gets ``default`` and ``kube-root-ca.crt``), and the CRD
cleanup (a deleted CRD takes its objects with it).

Like their real counterparts they act asynchronously, after the write that triggers them,
so clients see the same eventual behaviour as in a cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cadre.api.types import Obj
from cadre.localcluster.apiserver import defaulting
from cadre.localcluster.apiserver.cluster import Cluster
from cadre.localcluster.apiserver.registry import ResourceType
from cadre.localcluster.apiserver.status import ApiError
from cadre.localcluster.apiserver.store import ANY, Change, GroupResource

log = logging.getLogger(__name__)
_ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal"
    " endpoints such as the internal service IP or kubernetes.default.svc. No other usage is"
    " guaranteed across distributions of Kubernetes clusters."
)


class Controllers:
    def __init__(self, cluster: Cluster, root_ca_pem: str) -> None:
        self.cluster = cluster
        self.root_ca_pem = root_ca_pem
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        subscription = self.cluster.store.subscribe(ANY)
        for resource, obj in self.cluster.store.all_objects():
            self._react(resource, obj, None)
        self._task = asyncio.get_running_loop().create_task(self._run(subscription.queue))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, queue: asyncio.Queue[Change]) -> None:
        while True:
            change = await queue.get()
            try:
                self._react(change.resource, change.obj, change)
            except Exception:  # a controller bug must not stop the others; it is logged
                log.exception("controller failed on %s %s", change.type, change.resource)

    def _rtype(self, resource: GroupResource) -> ResourceType | None:
        return self.cluster.registry.by_group_resource(*resource)

    def _react(self, resource: GroupResource, obj: Obj, change: Change | None) -> None:
        deleted = change is not None and change.type == "DELETED"
        meta = obj["metadata"]
        if resource == ("", "namespaces") and not deleted:
            self._namespace(obj)
        if meta.get("deletionTimestamp") and not deleted:
            finalizers = meta.get("finalizers") or []
            if "orphan" in finalizers:
                self._orphan(resource, obj)
            if "foregroundDeletion" in finalizers:
                self._foreground(resource, obj)
            if resource == ("apiextensions.k8s.io", "customresourcedefinitions"):
                self._crd_cleanup(obj)
        if deleted:
            self._collect_dependents(obj)
        if meta.get("ownerReferences") and not deleted:
            self._check_owners(resource, obj)
        namespace = meta.get("namespace")
        if deleted and namespace:
            ns = self.cluster.store.get(("", "namespaces"), "", namespace)
            if ns is not None and ns["metadata"].get("deletionTimestamp"):
                self._namespace(ns)
        if deleted:
            for owner_ref in meta.get("ownerReferences") or []:
                owner = self.cluster.store.by_uid(owner_ref.get("uid", ""))
                if owner is not None and "foregroundDeletion" in (
                    owner[1]["metadata"].get("finalizers") or []
                ):
                    self._foreground(owner[0], owner[1])
            if resource[0] and resource[1] != "customresourcedefinitions":
                self._recheck_crd(resource)

    # -- helpers --------------------------------------------------------------------------

    def _delete(self, resource: GroupResource, obj: Obj, policy: str = "Background") -> None:
        rtype = self._rtype(resource)
        if rtype is None:
            return
        meta = obj["metadata"]
        with contextlib.suppress(ApiError):
            self.cluster.delete(
                rtype, meta.get("namespace", ""), meta["name"], {"propagationPolicy": policy}
            )

    def _patch(self, resource: GroupResource, obj: Obj, patch: Obj) -> None:
        rtype = self._rtype(resource)
        if rtype is None:
            return
        meta = obj["metadata"]
        with contextlib.suppress(ApiError):
            self.cluster.patch(
                rtype,
                meta.get("namespace", ""),
                meta["name"],
                "application/merge-patch+json",
                patch,
            )

    def _remove_finalizer(self, resource: GroupResource, obj: Obj, finalizer: str) -> None:
        remaining = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]
        self._patch(resource, obj, {"metadata": {"finalizers": remaining or None}})

    def _dependents(self, owner: Obj) -> list[tuple[GroupResource, Obj]]:
        uid = owner["metadata"]["uid"]
        return [
            (resource, obj)
            for resource, obj in self.cluster.store.all_objects()
            if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
        ]

    def _owner_exists(self, dependent: Obj, ref: Obj) -> bool:
        """An owner counts only in the dependent's namespace, or cluster-scoped (as the GC)."""
        found = self.cluster.store.by_uid(ref.get("uid", ""))
        if found is None:
            return False
        owner_ns = found[1]["metadata"].get("namespace", "")
        return not owner_ns or owner_ns == dependent["metadata"].get("namespace", "")

    # -- garbage collector ----------------------------------------------------------------

    def _collect_dependents(self, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        for resource, dependent in self._dependents(owner):
            refs = dependent["metadata"].get("ownerReferences") or []
            if any(r.get("uid") != uid and self._owner_exists(dependent, r) for r in refs):
                kept = [r for r in refs if r.get("uid") != uid]
                self._patch(resource, dependent, {"metadata": {"ownerReferences": kept}})
            else:
                self._delete(resource, dependent)

    def _check_owners(self, resource: GroupResource, obj: Obj) -> None:
        refs = obj["metadata"].get("ownerReferences") or []
        if refs and not any(self._owner_exists(obj, r) for r in refs):
            self._delete(resource, obj)

    def _orphan(self, resource: GroupResource, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        for dep_resource, dependent in self._dependents(owner):
            kept = [
                r for r in dependent["metadata"].get("ownerReferences") or [] if r.get("uid") != uid
            ]
            self._patch(dep_resource, dependent, {"metadata": {"ownerReferences": kept or None}})
        self._remove_finalizer(resource, owner, "orphan")

    def _foreground(self, resource: GroupResource, owner: Obj) -> None:
        dependents = self._dependents(owner)
        for dep_resource, dependent in dependents:
            if not dependent["metadata"].get("deletionTimestamp"):
                self._delete(dep_resource, dependent, "Foreground")
        if not dependents:
            self._remove_finalizer(resource, owner, "foregroundDeletion")

    # -- namespaces -----------------------------------------------------------------------

    def _namespace(self, ns: Obj) -> None:
        name = ns["metadata"]["name"]
        if not ns["metadata"].get("deletionTimestamp"):
            self._publish_defaults(name)
            return
        remaining = [
            (resource, obj)
            for resource, obj in self.cluster.store.all_objects()
            if obj["metadata"].get("namespace") == name
        ]
        for resource, obj in remaining:
            if not obj["metadata"].get("deletionTimestamp"):
                self._delete(resource, obj)
        if remaining:
            return
        finalizers = [
            f
            for f in ns.get("spec", {}).get("finalizers") or []
            if f != defaulting.NAMESPACE_FINALIZER
        ]
        rtype = self._rtype(("", "namespaces"))
        assert rtype is not None
        current = self.cluster.store.get(("", "namespaces"), "", name)
        if current is None:
            return
        new = {**current, "spec": {**current.get("spec", {}), "finalizers": finalizers}}
        stored = self.cluster.store.write(("", "namespaces"), new, "MODIFIED")
        if not stored["metadata"].get("finalizers") and not finalizers:
            self.cluster.remove(rtype, stored)

    def _publish_defaults(self, namespace: str) -> None:
        """What the service-account and root-CA controllers create in every namespace."""
        store, registry = self.cluster.store, self.cluster.registry
        accounts = registry.lookup("", "v1", "serviceaccounts")
        configmaps = registry.lookup("", "v1", "configmaps")
        assert accounts is not None
        assert configmaps is not None
        if store.get(("", "serviceaccounts"), namespace, "default") is None:
            with contextlib.suppress(ApiError):
                self.cluster.create(
                    accounts,
                    namespace,
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}},
                )
        if store.get(("", "configmaps"), namespace, defaulting.ROOT_CA_CONFIGMAP) is None:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": defaulting.ROOT_CA_CONFIGMAP,
                    "annotations": {"kubernetes.io/description": _ROOT_CA_DESCRIPTION},
                },
                "data": {"ca.crt": self.root_ca_pem},
            }
            with contextlib.suppress(ApiError):
                self.cluster.create(configmaps, namespace, body)

    # -- CRDs -----------------------------------------------------------------------------

    def _crd_cleanup(self, crd: Obj) -> None:
        resource = (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        instances = self.cluster.store.items(resource)
        for obj in instances:
            if not obj["metadata"].get("deletionTimestamp"):
                self._delete(resource, obj)
        if not instances:
            self._remove_finalizer(
                ("apiextensions.k8s.io", "customresourcedefinitions"),
                crd,
                defaulting.CRD_CLEANUP_FINALIZER,
            )

    def _recheck_crd(self, resource: GroupResource) -> None:
        name = f"{resource[1]}.{resource[0]}"
        crd = self.cluster.store.get(
            ("apiextensions.k8s.io", "customresourcedefinitions"), "", name
        )
        if crd is not None and crd["metadata"].get("deletionTimestamp"):
            self._crd_cleanup(crd)
