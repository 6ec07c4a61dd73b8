"""Admission of built-in kinds: the ServiceAccount plugin (a pod gets its account's token
volume) and Service cluster-IP allocation. Pure functions over JSON objects."""

from __future__ import annotations

import ipaddress
import itertools

from cadre.api.types import Obj
from cadre.localcluster.apiserver.defaulting import ROOT_CA_CONFIGMAP, TOKEN_MOUNT_PATH
from cadre.localcluster.apiserver.metadata import generated_name

_SERVICE_NETWORK = ipaddress.ip_network("10.96.0.0/12")


# ---------------------------------------------------------------------------------------------
# Service accounts


_CA_ITEM = {"key": "ca.crt", "path": "ca.crt"}
_NAMESPACE_ITEM = {
    "path": "namespace",
    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
}


def service_account_volume(pod: Obj) -> tuple[Obj, Obj]:
    """The projected volume and mount the ServiceAccount admission plugin adds to a pod."""
    name = generated_name("kube-api-access-")
    volume = {
        "name": name,
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [_CA_ITEM]}},
                {"downwardAPI": {"items": [_NAMESPACE_ITEM]}},
            ],
        },
    }  # fmt: skip
    mount = {"name": name, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH}
    return volume, mount


def admit_pod_service_account(pod: Obj, service_account: Obj) -> None:
    """Mount the account's token unless the pod or the account opts out."""
    spec = pod["spec"]
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        automount = service_account.get("automountServiceAccountToken", True)
    if not automount:
        return
    containers = list(itertools.chain(spec.get("initContainers", []), spec.get("containers", [])))
    if any(
        m.get("mountPath") == TOKEN_MOUNT_PATH
        for c in containers
        for m in c.get("volumeMounts", [])
    ):
        return
    volume, mount = service_account_volume(pod)
    spec.setdefault("volumes", []).append(volume)
    for container in containers:
        container.setdefault("volumeMounts", []).append(dict(mount))


def allocate_cluster_ip(service: Obj, taken: set[str]) -> None:
    spec = service["spec"]
    if spec.get("clusterIP") == "None" or spec.get("type") == "ExternalName":
        return
    if not spec.get("clusterIP"):
        for address in itertools.islice(_SERVICE_NETWORK.hosts(), 10, None):
            if str(address) not in taken:
                spec["clusterIP"] = str(address)
                break
    spec["clusterIPs"] = [spec["clusterIP"]]
