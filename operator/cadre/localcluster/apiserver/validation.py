"""Validation of the built-in kinds beyond their schema: the rules of each kind's
validation.go that Cadre can hit, and immutable fields. Pure functions returning the errors,
each naming its field; only the kinds listed in ``_VALIDATORS`` have rules here.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
from collections.abc import Callable

from cadre.api.types import Obj
from cadre.localcluster.apiserver import policies
from cadre.localcluster.apiserver.crdschema import FieldError, check_structural
from cadre.localcluster.apiserver.selectors import label_selector_matches

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


def _validate_workload(obj: Obj) -> list[FieldError]:
    spec = obj.get("spec", {})
    template = spec.get("template", {})
    # A StatefulSet's containers may mount its volumeClaimTemplates by name.
    claims = {c.get("metadata", {}).get("name") for c in spec.get("volumeClaimTemplates", [])}
    errors = _validate_pod_spec(template.get("spec", {}), "spec.template.spec", claims)
    labels = template.get("metadata", {}).get("labels") or {}
    if "selector" not in spec:
        errors.append(FieldError("spec.selector", "Required value"))
    elif not label_selector_matches(spec["selector"], labels):
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


def _validate_policy(obj: Obj) -> list[FieldError]:
    errors = policies.compile_errors(obj)
    if (obj.get("spec") or {}).get("paramKind"):
        errors.append(FieldError("spec.paramKind", "Forbidden", _NO_PARAMS))
    return errors


def _validate_policy_binding(obj: Obj) -> list[FieldError]:
    spec = obj.get("spec") or {}
    errors = []
    if not spec.get("policyName"):
        errors.append(FieldError("spec.policyName", "Required value"))
    if spec.get("paramRef"):
        errors.append(FieldError("spec.paramRef", "Forbidden", _NO_PARAMS))
    for index, action in enumerate(spec.get("validationActions") or []):
        if action not in ("Deny", "Warn", "Audit"):
            path = f"spec.validationActions[{index}]"
            errors.append(FieldError(path, "Unsupported value", f'"{action}"'))
    if not spec.get("validationActions"):
        errors.append(FieldError("spec.validationActions", "Required value"))
    return errors


_NO_PARAMS = "parameter resources are not supported by the Cadre local cluster"
_VALIDATORS: dict[str, Callable[[Obj], list[FieldError]]] = {
    "ValidatingAdmissionPolicy": _validate_policy,
    "ValidatingAdmissionPolicyBinding": _validate_policy_binding,
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
