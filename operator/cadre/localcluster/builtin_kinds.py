"""What kube-apiserver does to the built-in kinds beyond their schema: defaults, initial
status, admission (service-account tokens), validation of the rules Cadre can hit, and
immutable fields. Pure functions over JSON objects; the cluster calls them on every write.

Only the kinds listed in ``_DEFAULTERS``/``_VALIDATORS`` have behaviour here; the others are
stored as sent (docs/localcluster.md lists them).
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import itertools
from collections.abc import Callable

from cadre.api.types import Obj
from cadre.localcluster.crdschema import FieldError, check_structural
from cadre.localcluster.metadata import generated_name

TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a path
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
NAMESPACE_FINALIZER = "kubernetes"
_SERVICE_NETWORK = ipaddress.ip_network("10.96.0.0/12")


# ---------------------------------------------------------------------------------------------
# Defaults


def _default_container(container: Obj) -> None:
    image = container.get("image", "")
    tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
    latest = not tagged or image.endswith(":latest")
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports", []):
        port.setdefault("protocol", "TCP")


def default_pod_spec(spec: Obj) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for container in itertools.chain(spec.get("initContainers", []), spec.get("containers", [])):
        _default_container(container)


def _qos_class(spec: Obj) -> str:
    containers = spec.get("containers", [])
    resources = [c.get("resources", {}) for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    guaranteed = all(
        {"cpu", "memory"} <= set(r.get("limits", {}))
        and all(r.get("requests", r["limits"]).get(k) == r["limits"][k] for k in ("cpu", "memory"))
        for r in resources
    )
    return "Guaranteed" if guaranteed else "Burstable"


def _default_template(obj: Obj) -> None:
    template = obj.setdefault("spec", {}).setdefault("template", {})
    default_pod_spec(template.setdefault("spec", {}))


def _default_pod(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    default_pod_spec(spec)
    spec.setdefault("serviceAccountName", "default")
    spec["serviceAccount"] = spec["serviceAccountName"]


def _default_service(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports", []):
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def _default_namespace(obj: Obj) -> None:
    obj.setdefault("spec", {}).setdefault("finalizers", [NAMESPACE_FINALIZER])
    labels = obj["metadata"].setdefault("labels", {})
    labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]


def _default_secret(obj: Obj) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _default_statefulset(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault(
        "persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"}
    )
    for claim in spec.get("volumeClaimTemplates", []):
        claim.setdefault("apiVersion", "v1")
        claim.setdefault("kind", "PersistentVolumeClaim")
        claim.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")
    _default_template(obj)


def _default_deployment(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault(
        "strategy",
        {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
    )
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _default_template(obj)


def _default_job(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    uid = obj["metadata"]["uid"]
    if not spec.get("manualSelector"):
        controller = {"batch.kubernetes.io/controller-uid": uid}
        spec.setdefault("selector", {"matchLabels": controller})
        labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
        labels.update(
            {
                **controller,
                "controller-uid": uid,
                "batch.kubernetes.io/job-name": obj["metadata"]["name"],
                "job-name": obj["metadata"]["name"],
            }
        )
    _default_template(obj)


def _default_network_policy(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    if "policyTypes" not in spec:
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if "egress" in spec else [])


def _default_pvc(obj: Obj) -> None:
    obj.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")


def _default_crd(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("conversion", {"strategy": "None"})
    names = spec.setdefault("names", {})
    if "kind" in names:
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")


_DEFAULTERS: dict[str, Callable[[Obj], None]] = {
    "Pod": _default_pod,
    "Service": _default_service,
    "Namespace": _default_namespace,
    "Secret": _default_secret,
    "StatefulSet": _default_statefulset,
    "Deployment": _default_deployment,
    "Job": _default_job,
    "NetworkPolicy": _default_network_policy,
    "PersistentVolumeClaim": _default_pvc,
    "CustomResourceDefinition": _default_crd,
}


def apply_defaults(kind: str, obj: Obj) -> None:
    defaulter = _DEFAULTERS.get(kind)
    if defaulter is not None:
        defaulter(obj)


# ---------------------------------------------------------------------------------------------
# Initial status (what the registry strategies' PrepareForCreate sets)


def initial_status(kind: str, obj: Obj) -> Obj | None:
    """The status a new object starts with; None when the kind has no status subresource."""
    if kind == "Pod":
        return {"phase": "Pending", "qosClass": _qos_class(obj.get("spec", {}))}
    if kind == "Namespace":
        return {"phase": "Active"}
    if kind == "PersistentVolumeClaim":
        return {"phase": "Pending"}
    if kind == "Service":
        return {"loadBalancer": {}}
    if kind == "StatefulSet":
        return {"replicas": 0, "availableReplicas": 0}
    if kind == "CustomResourceDefinition":
        return crd_status(obj)
    if kind in ("Deployment", "Job", "Node"):
        return {}
    return None


def crd_status(crd: Obj) -> Obj:
    """Names accepted and established at once: nothing here can conflict asynchronously."""
    spec = crd.get("spec", {})
    stamp = crd["metadata"]["creationTimestamp"]
    return {
        "acceptedNames": spec.get("names", {}),
        "storedVersions": [v["name"] for v in spec.get("versions", []) if v.get("storage")],
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": stamp},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": stamp},
        ],
    }  # fmt: skip


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


# ---------------------------------------------------------------------------------------------
# Validation beyond the schema (the rules of each kind's validation.go that Cadre can hit)


def _validate_pod_spec(spec: Obj, path: str, claims: set[str] | None = None) -> list[FieldError]:
    errors = []
    if not spec.get("containers"):
        errors.append(FieldError(f"{path}.containers", "Required value"))
    names: set[str] = set()
    for index, container in enumerate(
        itertools.chain(spec.get("initContainers", []), spec.get("containers", []))
    ):
        name = container.get("name", "")
        where = f"{path}.containers[{index}]"
        if not container.get("image"):
            errors.append(FieldError(f"{where}.image", "Required value"))
        if name in names:
            errors.append(
                FieldError(f"{where}.name", "Duplicate value", value=name, show_value=True)
            )
        names.add(name)
    volume_names = {v.get("name") for v in spec.get("volumes", [])} | (claims or set())
    for index, container in enumerate(spec.get("containers", [])):
        for mount_index, mount in enumerate(container.get("volumeMounts", [])):
            if mount.get("name") not in volume_names:
                errors.append(
                    FieldError(
                        f"{path}.containers[{index}].volumeMounts[{mount_index}].name",
                        "Not found",
                        value=mount.get("name"),
                        show_value=True,
                    )
                )
    return errors


def _validate_pod(obj: Obj) -> list[FieldError]:
    return _validate_pod_spec(obj.get("spec", {}), "spec")


def _selector_matches(selector: Obj, labels: Obj) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def _validate_workload(obj: Obj) -> list[FieldError]:
    spec = obj.get("spec", {})
    template = spec.get("template", {})
    # A StatefulSet's containers may mount its volumeClaimTemplates by name.
    claims = {c.get("metadata", {}).get("name") for c in spec.get("volumeClaimTemplates", [])}
    errors = _validate_pod_spec(template.get("spec", {}), "spec.template.spec", claims)
    labels = template.get("metadata", {}).get("labels") or {}
    if "selector" not in spec:
        errors.append(FieldError("spec.selector", "Required value"))
    elif not _selector_matches(spec["selector"], labels):
        errors.append(
            FieldError(
                "spec.template.metadata.labels",
                "Invalid value",
                "`selector` does not match template `labels`",
                labels,
                True,
            )
        )
    if obj.get("kind") == "Job":
        policy = template.get("spec", {}).get("restartPolicy")
        if policy not in ("OnFailure", "Never"):
            errors.append(
                FieldError(
                    "spec.template.spec.restartPolicy",
                    "Unsupported value",
                    'supported values: "OnFailure", "Never"',
                    policy,
                    True,
                )
            )
    return errors


def _validate_secret(obj: Obj) -> list[FieldError]:
    errors = []
    for key, value in (obj.get("data") or {}).items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError, TypeError):
            errors.append(
                FieldError(
                    f"data[{key}]", "Invalid value", "illegal base64 data", "<value omitted>", True
                )
            )
    return errors


def _validate_crd(obj: Obj) -> list[FieldError]:
    spec = obj.get("spec", {})
    names = spec.get("names", {})
    errors = []
    expected = f"{names.get('plural', '')}.{spec.get('group', '')}"
    if obj["metadata"]["name"] != expected:
        errors.append(
            FieldError(
                "metadata.name",
                "Invalid value",
                'must be spec.names.plural+"."+spec.group',
                obj["metadata"]["name"],
                True,
            )
        )
    if sum(1 for v in spec.get("versions", []) if v.get("storage")) != 1:
        errors.append(
            FieldError(
                "spec.versions",
                "Invalid value",
                "must have exactly one version marked as storage version",
                spec.get("versions"),
                True,
            )
        )
    for index, version in enumerate(spec.get("versions", [])):
        schema = version.get("schema", {}).get("openAPIV3Schema")
        if schema is None:
            errors.append(
                FieldError(
                    f"spec.versions[{index}].schema.openAPIV3Schema",
                    "Required value",
                    "schemas are required",
                )
            )
            continue
        for problem in check_structural(schema, f"spec.versions[{index}].schema.openAPIV3Schema"):
            where, _, detail = problem.partition(": ")
            kind, _, rest = detail.partition(": ")
            errors.append(FieldError(where, kind, rest))
    return errors


_VALIDATORS: dict[str, Callable[[Obj], list[FieldError]]] = {
    "Pod": _validate_pod,
    "StatefulSet": _validate_workload,
    "Deployment": _validate_workload,
    "Job": _validate_workload,
    "Secret": _validate_secret,
    "CustomResourceDefinition": _validate_crd,
}


def validate(kind: str, obj: Obj) -> list[FieldError]:
    validator = _VALIDATORS.get(kind)
    return validator(obj) if validator is not None else []


# ---------------------------------------------------------------------------------------------
# Immutable fields on update


def _without_images(spec: Obj) -> Obj:
    spec = copy.deepcopy(spec)
    for container in itertools.chain(spec.get("initContainers", []), spec.get("containers", [])):
        container.pop("image", None)
    spec.pop("activeDeadlineSeconds", None)
    spec.pop("tolerations", None)
    return spec


def validate_update(kind: str, new: Obj, old: Obj) -> list[FieldError]:
    """The update rules of each kind's ValidateUpdate that Cadre can hit."""
    errors = []
    if kind == "Pod" and _without_images(new.get("spec", {})) != _without_images(
        old.get("spec", {})
    ):
        errors.append(
            FieldError(
                "spec",
                "Forbidden",
                "pod updates may not change fields other than `spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                "`spec.tolerations` (only additions to existing tolerations),"
                "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was"
                " previously negative)",
            )
        )
    if kind in ("Secret", "ConfigMap") and old.get("immutable"):
        for field in ("data", "binaryData", "stringData"):
            if new.get(field) != old.get(field):
                errors.append(
                    FieldError(field, "Forbidden", "field is immutable when `immutable` is set")
                )
    if kind == "StatefulSet":
        mutable = (
            "replicas",
            "ordinals",
            "template",
            "updateStrategy",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
        )
        new_fixed = {k: v for k, v in new.get("spec", {}).items() if k not in mutable}
        old_fixed = {k: v for k, v in old.get("spec", {}).items() if k not in mutable}
        if new_fixed != old_fixed:
            errors.append(
                FieldError(
                    "spec",
                    "Forbidden",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals',"
                    " 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and"
                    " 'minReadySeconds' are forbidden",
                )
            )
    if kind == "Job" and new.get("spec", {}).get("template") != old.get("spec", {}).get("template"):
        errors.append(
            FieldError(
                "spec.template",
                "Invalid value",
                "field is immutable",
                "core.PodTemplateSpec{...}",
                True,
            )
        )
    if (
        kind == "Service"
        and old.get("spec", {}).get("clusterIP")
        and new.get("spec", {}).get("clusterIP") not in (None, "", old["spec"]["clusterIP"])
    ):
        errors.append(
            FieldError(
                "spec.clusterIP",
                "Invalid value",
                "field is immutable",
                new["spec"]["clusterIP"],
                True,
            )
        )
    return errors
