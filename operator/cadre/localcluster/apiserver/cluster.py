"""The API server's object semantics, independent of HTTP: create, read, list, update, patch
and delete with Kubernetes' rules (uid, resourceVersion, generation, generateName, status
subresource, optimistic concurrency, finalizers, graceful deletion, field validation, schema
validation with CEL, pruning and defaulting of custom resources)."""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import dataclass, field
from typing import Any

from cadre.api.types import Obj
from cadre.localcluster.apiserver import (
    admission,
    crdschema,
    defaulting,
    fieldmanager,
    metadata,
    patches,
    validation,
)
from cadre.localcluster.apiserver.authn import User
from cadre.localcluster.apiserver.crdschema import FieldError
from cadre.localcluster.apiserver.policies import AdmissionRequest, Policies
from cadre.localcluster.apiserver.registry import Registry, ResourceType
from cadre.localcluster.apiserver.selectors import Matcher
from cadre.localcluster.apiserver.status import (
    STALE,
    ApiError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    gone,
    invalid,
    not_found,
    unsupported_media_type,
)
from cadre.localcluster.apiserver.store import Store, TooOldError

FIELD_VALIDATION = ("Ignore", "Warn", "Strict")
_CONTINUE_TOO_OLD = (
    "The provided continue parameter is too old to display a consistent list result. You can"
    " start a new list without the continue parameter, or use the continue token in this"
    " response to retrieve the remainder of the results. Continuing with the provided token"
    " results in an inconsistent list - objects that were created, modified, or deleted between"
    " the time the first chunk was returned and now may show up in the list."
)
_FINAL_POD_PHASES = ("Succeeded", "Failed")


@dataclass
class WriteResult:
    """An object as stored, and the warnings the client should print."""

    obj: Obj
    warnings: list[str] = field(default_factory=list)
    created: bool = False


def _gr(rtype: ResourceType) -> tuple[str, str]:
    return rtype.group_resource


class Cluster:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self.policies = Policies(store)

    def _check_policies(
        self, operation: str, rtype: ResourceType, subresource: str, new: Obj | None,
        old: Obj | None, user: User | None,
    ) -> list[str]:  # fmt: skip
        """ValidatingAdmissionPolicies, for requests made by a user (the controllers and the
        kubelet of this process write directly, as trusted parts of the control plane)."""
        if user is None:
            return []
        meta = (new or old or {}).get("metadata") or {}
        request = AdmissionRequest(
            operation, rtype.group, rtype.version, rtype.plural, subresource, rtype.kind,
            meta.get("namespace", "") if rtype.namespaced else "", meta.get("name", ""), user,
            None if new is None else self.present(rtype, new),
            None if old is None else self.present(rtype, old),
        )  # fmt: skip
        return self.policies.check(request)

    # -----------------------------------------------------------------------------------------
    # Reading

    def present(self, rtype: ResourceType, obj: Obj) -> Obj:
        """An object as a client of ``rtype``'s version sees it (CRDs convert with ``None``)."""
        return {**obj, "apiVersion": rtype.api_version, "kind": rtype.kind}

    def get(self, rtype: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(_gr(rtype), namespace, name)
        if obj is None:
            raise not_found(rtype.group, rtype.plural, name)
        return self.present(rtype, obj)

    def list(
        self,
        rtype: ResourceType,
        namespace: str | None,
        matches: Matcher,
        limit: int = 0,
        continue_token: str = "",
        resource_version: str = "",
        resource_version_match: str = "",
    ) -> Obj:
        after: tuple[str, str] | None = None
        try:
            if continue_token:
                revision, after = _decode_continue(continue_token)
                items = self.store.items_at(_gr(rtype), namespace, revision)
            elif resource_version and resource_version_match == "Exact":
                revision = _parse_rv(resource_version)
                items = self.store.items_at(_gr(rtype), namespace, revision)
            else:
                revision = self.store.revision
                items = self.store.items(_gr(rtype), namespace)
        except TooOldError as err:
            message = _CONTINUE_TOO_OLD if continue_token else f"too old resource version: {err}"
            raise gone(message) from err
        if after is not None:
            items = [o for o in items if _key(o) > after]
        selected = [self.present(rtype, o) for o in items if matches(o)]
        meta: Obj = {"resourceVersion": str(revision)}
        if limit and len(selected) > limit:
            meta["continue"] = _encode_continue(revision, _key(selected[limit - 1]))
            meta["remainingItemCount"] = len(selected) - limit
            selected = selected[:limit]
        return {
            "kind": f"{rtype.kind}List",
            "apiVersion": rtype.api_version,
            "metadata": meta,
            "items": selected,
        }

    # -----------------------------------------------------------------------------------------
    # Decoding and validation shared by every write

    def _decode(
        self, rtype: ResourceType, body: Any, namespace: str, field_validation: str
    ) -> WriteResult:
        if not isinstance(body, dict):
            raise bad_request(f"Object 'Kind' is missing in '{json.dumps(body)[:200]}'")
        if not rtype.custom:
            # Typed endpoints default the type from the URL; custom resources require it.
            body = {"apiVersion": rtype.api_version, "kind": rtype.kind, **body}
        if not body.get("kind"):
            raise bad_request(f"Object 'Kind' is missing in '{json.dumps(body)[:200]}'")
        if body.get("apiVersion") != rtype.api_version:
            raise bad_request(
                f"the API version in the data ({body.get('apiVersion')}) does not match the"
                f" expected API version ({rtype.api_version})"
            )
        if body["kind"] != rtype.kind:
            raise bad_request(
                f"the kind in the data ({body['kind']}) does not match the expected kind"
                f" ({rtype.kind})"
            )
        meta = body.get("metadata") or {}
        if not isinstance(meta, dict):
            raise bad_request(
                f'{rtype.kind} in version "{rtype.version}" cannot be handled as a'
                f" {rtype.kind}: metadata must be an object"
            )
        if rtype.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the"
                " request"
            )
        if field_validation not in FIELD_VALIDATION:
            raise bad_request(
                f"fieldValidation: Unsupported value: {json.dumps(field_validation)}:"
                ' supported values: "Ignore", "Warn", "Strict"'
            )
        unknown = list(crdschema.unknown_fields(body, rtype.schema))
        if unknown and field_validation == "Strict":
            listed = ", ".join(f'unknown field "{path}"' for path in unknown)
            raise bad_request(f"strict decoding error: {listed}")
        warnings = (
            [f'unknown field "{path}"' for path in unknown] if field_validation == "Warn" else []
        )
        obj = crdschema.prune(copy.deepcopy(body), rtype.schema)
        obj["metadata"] = dict(meta)
        return WriteResult(obj, warnings)

    def _admit(self, rtype: ResourceType, obj: Obj, old: Obj | None) -> Obj:
        """Default and validate ``obj``; raises 422 (or 400 for a built-in's wrong types)."""
        errors: list[FieldError] = []
        if old is None:
            errors += metadata.validate_name(rtype.kind, obj["metadata"].get("name", ""))
        errors += metadata.validate_labels(obj["metadata"])
        if rtype.custom:
            obj = crdschema.apply_defaults(obj, rtype.schema)
            errors += crdschema.validate(obj, rtype.schema, old)
        else:
            defaulting.apply_defaults(rtype.kind, obj)
            type_errors = [
                e for e in crdschema.validate(obj, rtype.schema) if "must be of type" in e.detail
            ]
            if type_errors:
                raise bad_request(
                    f'{rtype.kind} in version "{rtype.version}" cannot be handled as a'
                    f" {rtype.kind}: {type_errors[0]}"
                )
            errors += [e for e in crdschema.validate(obj, rtype.schema) if e not in type_errors]
            errors += validation.validate(rtype.kind, obj)
            if old is not None:
                errors += validation.validate_update(rtype.kind, obj, old)
        if errors:
            raise invalid(rtype.group, rtype.kind, obj["metadata"].get("name", ""), errors)
        return obj

    def _namespace_open(self, rtype: ResourceType, namespace: str, name: str) -> None:
        if not rtype.namespaced:
            return
        ns = self.store.get(("", "namespaces"), "", namespace)
        if ns is None:
            raise not_found("", "namespaces", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise forbidden(
                f'{rtype.qualified} "{name}" is forbidden: unable to create new content in'
                f" namespace {namespace} because it is being terminated",
                rtype.group,
                rtype.plural,
                name,
            )

    # -----------------------------------------------------------------------------------------
    # Create

    def create(
        self, rtype: ResourceType, namespace: str, body: Any, field_validation: str = "Warn",
        user: User | None = None, manager: str = "",
    ) -> WriteResult:  # fmt: skip
        decoded = self._decode(rtype, body, namespace, field_validation)
        obj = decoded.obj
        if manager and not obj.get("metadata", {}).get("managedFields"):
            _set_managed(obj, fieldmanager.record_update(None, obj, rtype.schema, manager, "",
                                                         metadata.now()))  # fmt: skip
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and not meta.get("generateName"):
            raise invalid(
                rtype.group,
                rtype.kind,
                "",
                [FieldError("metadata.name", "Required value", "name or generateName is required")],
            )
        obj["metadata"] = metadata.for_create(
            meta, namespace if rtype.namespaced else "", rtype.has_generation
        )
        name = obj["metadata"]["name"]
        self._namespace_open(rtype, namespace, name)
        if "status" in rtype.subresources or rtype.kind == "Namespace":
            obj.pop("status", None)
            status = None if rtype.custom else defaulting.initial_status(rtype.kind, obj)
            if status is not None:
                obj["status"] = status
        obj = self._admit(rtype, obj, None)
        self._admit_create(rtype, obj)
        if self.store.get(_gr(rtype), namespace if rtype.namespaced else "", name) is not None:
            raise already_exists(rtype.group, rtype.plural, name)
        warned = self._check_policies("CREATE", rtype, "", obj, None, user)
        stored = self.store.write(_gr(rtype), obj, "ADDED")
        if rtype.kind == "CustomResourceDefinition":
            self.registry.set_crd(stored)
        return WriteResult(self.present(rtype, stored), decoded.warnings + warned, created=True)

    def _admit_create(self, rtype: ResourceType, obj: Obj) -> None:
        """Admission that looks at other objects: service accounts, cluster IPs, CRD status."""
        if rtype.kind == "Pod":
            account_name = obj["spec"]["serviceAccountName"]
            namespace = obj["metadata"]["namespace"]
            account = self.store.get(("", "serviceaccounts"), namespace, account_name)
            if account is None:
                raise forbidden(
                    f'pods "{obj["metadata"]["name"]}" is forbidden: error looking up service'
                    f" account {namespace}/{account_name}: serviceaccount"
                    f' "{account_name}" not found',
                    "",
                    "pods",
                    obj["metadata"]["name"],
                )
            admission.admit_pod_service_account(obj, account)
        elif rtype.kind == "Service":
            taken = {s["spec"].get("clusterIP", "") for s in self.store.items(("", "services"))}
            admission.allocate_cluster_ip(obj, taken)
        elif rtype.kind == "CustomResourceDefinition":
            finalizers = obj["metadata"].setdefault("finalizers", [])
            if defaulting.CRD_CLEANUP_FINALIZER not in finalizers:
                finalizers.append(defaulting.CRD_CLEANUP_FINALIZER)

    # -----------------------------------------------------------------------------------------
    # Update and patch

    def update(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        subresource: str = "",
        field_validation: str = "Warn",
        user: User | None = None,
        manager: str = "",
    ) -> WriteResult:
        old = self.store.get(_gr(rtype), namespace, name)
        if old is None:
            raise not_found(rtype.group, rtype.plural, name)
        decoded = self._decode(rtype, body, namespace, field_validation)
        new = decoded.obj
        given = new.get("metadata", {}).get("managedFields")
        if new["metadata"].get("name", name) != name:
            raise bad_request(
                f"the name of the object ({new['metadata'].get('name')}) does not match the name"
                f" on the URL ({name})"
            )
        wanted_rv = new["metadata"].get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rtype.group, rtype.plural, name, STALE)
        uid = new["metadata"].get("uid")
        if uid and uid != old["metadata"]["uid"]:
            raise conflict(
                rtype.group,
                rtype.plural,
                name,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta:"
                f" {old['metadata']['uid']}",
            )
        if subresource == "status":
            merged = {k: v for k, v in old.items() if k != "status"}
            if "status" in new:
                merged["status"] = new["status"]
            new = merged
        else:
            new["metadata"] = metadata.for_update(new["metadata"], old["metadata"])
            if "status" in rtype.subresources:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
            self._check_finalizers(rtype, new, old)
            self._carry_over(rtype, new, old)
        new = self._admit(rtype, new, old)
        if manager and (given is None or given == old["metadata"].get("managedFields")):
            # Fields changed become the manager's (a client that sends managedFields of its
            # own sets them, as in Kubernetes; one that echoes them back changes nothing).
            _set_managed(new, fieldmanager.record_update(
                old, new, rtype.schema, manager, subresource, metadata.now()))  # fmt: skip
        elif given is None and old["metadata"].get("managedFields"):
            new["metadata"]["managedFields"] = old["metadata"]["managedFields"]
        if rtype.has_generation and metadata.content(new) != metadata.content(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        warned = self._check_policies("UPDATE", rtype, subresource, new, old, user)
        if metadata.same_object(new, old):
            return WriteResult(self.present(rtype, old), decoded.warnings + warned)
        stored = self.store.write(_gr(rtype), new, "MODIFIED")
        if rtype.kind == "CustomResourceDefinition":
            self.registry.set_crd(stored)
        if self._ready_to_remove(rtype, stored):
            self.remove(rtype, stored)
        return WriteResult(self.present(rtype, stored), decoded.warnings + warned)

    def _check_finalizers(self, rtype: ResourceType, new: Obj, old: Obj) -> None:
        if not old["metadata"].get("deletionTimestamp"):
            return
        added = set(new["metadata"].get("finalizers") or []) - set(
            old["metadata"].get("finalizers") or []
        )
        if added:
            listed = ", ".join(f'"{f}"' for f in sorted(added))
            raise invalid(
                rtype.group,
                rtype.kind,
                old["metadata"]["name"],
                [
                    FieldError(
                        "metadata.finalizers",
                        "Forbidden",
                        "no new finalizers can be added if the object is being deleted, found"
                        f" new finalizers []string{{{listed}}}",
                    )
                ],
            )

    def _carry_over(self, rtype: ResourceType, new: Obj, old: Obj) -> None:
        """Fields a client may omit on update that the server keeps (allocated by it)."""
        if rtype.kind == "Service":
            spec = new.setdefault("spec", {})
            for key in ("clusterIP", "clusterIPs"):
                if not spec.get(key) and key in old.get("spec", {}):
                    spec[key] = old["spec"][key]
        if rtype.kind == "Pod":
            spec = new.setdefault("spec", {})
            for key in ("nodeName", "serviceAccountName", "serviceAccount"):
                if key not in spec and key in old.get("spec", {}):
                    spec[key] = old["spec"][key]

    def patch(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch: Any,
        subresource: str = "",
        field_validation: str = "Warn",
        user: User | None = None,
        manager: str = "",
        force: bool = False,
    ) -> WriteResult:
        if content_type == patches.APPLY:
            return self.apply(rtype, namespace, name, patch, subresource, field_validation,
                              user, manager, force)  # fmt: skip
        old = self.store.get(_gr(rtype), namespace, name)
        if old is None:
            raise not_found(rtype.group, rtype.plural, name)
        current = self.present(rtype, old)
        if content_type == patches.MERGE:
            if not isinstance(patch, dict):
                raise bad_request(
                    "json: cannot unmarshal array into Go value of type map[string]interface {}"
                )
            patched = patches.merge_patch(current, patch)
        elif content_type == patches.JSON_PATCH:
            patched = patches.json_patch(current, patch)
        elif content_type == patches.STRATEGIC and not rtype.custom:
            if not isinstance(patch, dict):
                raise bad_request(
                    "json: cannot unmarshal array into Go value of type map[string]interface {}"
                )
            patched = patches.strategic_merge_patch(current, patch, rtype.schema)
        else:
            accepted = [patches.JSON_PATCH, patches.MERGE]
            if not rtype.custom:
                accepted.append(patches.STRATEGIC)
            raise unsupported_media_type(accepted)
        if not isinstance(patched, dict):
            raise bad_request("the patch did not produce an object")
        meta = patched.setdefault("metadata", {})
        # A resourceVersion in the patch is a precondition; otherwise the patch applies to
        # the version just read, so it never conflicts.
        patch_meta = patch.get("metadata") if isinstance(patch, dict) else None
        if not (isinstance(patch_meta, dict) and patch_meta.get("resourceVersion")):
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self.update(rtype, namespace, name, patched, subresource, field_validation, user,
                           manager)  # fmt: skip

    def apply(
        self, rtype: ResourceType, namespace: str, name: str, body: Any, subresource: str,
        field_validation: str, user: User | None, manager: str, force: bool,
    ) -> WriteResult:  # fmt: skip
        """Server-side apply (``application/apply-patch+yaml``): creates the object if absent,
        else merges the applied configuration as its manager's, refusing (409) to change a
        field another manager owns unless forced."""
        if not manager:
            raise bad_request("fieldManager is required for apply requests")
        if not isinstance(body, dict):
            raise bad_request("apply patch must be a YAML or JSON object")
        if subresource not in ("", "status"):
            raise unsupported_media_type([patches.JSON_PATCH, patches.MERGE])
        meta: Obj = body["metadata"] if isinstance(body.get("metadata"), dict) else {}
        if meta.get("name", name) != name:
            raise bad_request(f"the name of the object ({meta.get('name')}) does not match the "
                              f"name on the URL ({name})")  # fmt: skip
        expected = f"{rtype.group}/{rtype.version}" if rtype.group else rtype.version
        if body.get("apiVersion") != expected or body.get("kind") != rtype.kind:
            got = f"{body.get('apiVersion')} and {body.get('kind')}"
            raise bad_request(
                f"apply patch: apiVersion and kind must be {expected} and {rtype.kind}, got {got}"
            )
        applied = {**body, "metadata": {**meta, "name": name}}
        old = self.store.get(_gr(rtype), namespace, name)
        stamp = metadata.now()
        if old is None:
            if subresource:
                raise not_found(rtype.group, rtype.plural, name)
            created = fieldmanager.apply(None, applied, rtype.schema, manager, force, stamp)
            return self.create(rtype, namespace, created, field_validation, user)
        try:
            merged = fieldmanager.apply(self.present(rtype, old), applied, rtype.schema, manager,
                                        force, stamp)  # fmt: skip
        except fieldmanager.ApplyConflict as err:
            causes = [
                {"type": "FieldManagerConflict", "field": fieldmanager.dotted(path),
                 "message": f'conflict with "{owner}"'}
                for owner, path in err.conflicts
            ]  # fmt: skip
            raise ApiError(409, "Conflict", err.message(), {"name": name, "group": rtype.group,
                           "kind": rtype.plural, "causes": causes}) from err  # fmt: skip
        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self.update(rtype, namespace, name, merged, subresource, field_validation, user)

    # -----------------------------------------------------------------------------------------
    # Delete

    def delete(
        self, rtype: ResourceType, namespace: str, name: str, options: Obj | None = None,
        user: User | None = None,
    ) -> tuple[Obj, bool]:  # fmt: skip
        """Delete now, or mark for deletion; returns the object and whether it is gone."""
        options = options or {}
        obj = self.store.get(_gr(rtype), namespace, name)
        if obj is None:
            raise not_found(rtype.group, rtype.plural, name)
        self._check_policies("DELETE", rtype, "", None, obj, user)
        meta = obj["metadata"]
        preconditions = options.get("preconditions") or {}
        for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            wanted = preconditions.get(key)
            if wanted and wanted != meta.get(key):
                raise conflict(
                    rtype.group,
                    rtype.plural,
                    name,
                    f"Precondition failed: {label} in precondition: {wanted}, {label} in object"
                    f" meta: {meta.get(key)}",
                )
        finalizers = list(meta.get("finalizers") or [])
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents"):
            policy = "Orphan"
        if policy not in (None, "Orphan", "Foreground", "Background"):
            raise bad_request(f"propagationPolicy: Unsupported value: {json.dumps(policy)}")
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        if policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        grace = self._grace_period(rtype, obj, options)
        pending = bool(finalizers) or grace > 0 or rtype.kind == "Namespace"
        if not pending:
            return self.present(rtype, self.remove(rtype, obj)), True
        new_meta = {**meta, "finalizers": finalizers} if finalizers else dict(meta)
        if not finalizers:
            new_meta.pop("finalizers", None)
        if not meta.get("deletionTimestamp") or grace < meta.get("deletionGracePeriodSeconds", 0):
            stamp = metadata.parse_time(metadata.now()).timestamp() + grace
            new_meta["deletionTimestamp"] = _format_time(stamp)
            new_meta["deletionGracePeriodSeconds"] = grace
            if rtype.has_generation and not meta.get("deletionTimestamp"):
                new_meta["generation"] = meta.get("generation", 1) + 1
        new = {**obj, "metadata": new_meta}
        if rtype.kind == "Namespace":
            new["status"] = {**obj.get("status", {}), "phase": "Terminating"}
        if metadata.same_object(new, obj):
            return self.present(rtype, obj), False
        stored = self.store.write(_gr(rtype), new, "MODIFIED")
        return self.present(rtype, stored), False

    def _grace_period(self, rtype: ResourceType, obj: Obj, options: Obj) -> int:
        """Pods on a node end gracefully (the kubelet finishes them); nothing else does."""
        if rtype.kind != "Pod":
            return 0
        spec, status = obj.get("spec", {}), obj.get("status", {})
        if not spec.get("nodeName") or status.get("phase") in _FINAL_POD_PHASES:
            return 0
        requested = options.get("gracePeriodSeconds")
        grace = spec.get("terminationGracePeriodSeconds", 30) if requested is None else requested
        return max(int(grace), 0)

    def _ready_to_remove(self, rtype: ResourceType, obj: Obj) -> bool:
        meta = obj["metadata"]
        if not meta.get("deletionTimestamp") or meta.get("finalizers"):
            return False
        if rtype.kind == "Namespace":
            return not obj.get("spec", {}).get("finalizers")
        if rtype.kind == "Pod":
            # A pod on a node goes when its kubelet deletes it with grace 0, not before.
            return bool(meta.get("deletionGracePeriodSeconds", 0) == 0)
        return True

    def remove(self, rtype: ResourceType, obj: Obj) -> Obj:
        """Take an object out of storage (the last step of every deletion)."""
        gone_obj = self.store.write(_gr(rtype), obj, "DELETED")
        if rtype.kind == "CustomResourceDefinition":
            self.registry.remove_crd(obj["metadata"]["name"])
        return gone_obj

    def delete_collection(
        self, rtype: ResourceType, namespace: str | None, matches: Matcher, options: Obj,
        user: User | None = None,
    ) -> Obj:  # fmt: skip
        listed = self.list(rtype, namespace, matches)
        for item in listed["items"]:
            meta = item["metadata"]
            try:
                self.delete(rtype, meta.get("namespace", ""), meta["name"], options, user)
            except ApiError as err:
                if err.code != 404:
                    raise
        return listed

    # -----------------------------------------------------------------------------------------
    # Subresources that are not plain reads and writes

    def bind(self, namespace: str, name: str, binding: Any) -> Obj:
        """``pods/binding``: assign a pod to a node, once (the scheduler's write)."""
        pods = self.registry.lookup("", "v1", "pods")
        assert pods is not None
        pod = self.store.get(("", "pods"), namespace, name)
        if pod is None:
            raise not_found("", "pods", name)
        node = (binding or {}).get("target", {}).get("name") if isinstance(binding, dict) else None
        if not node:
            raise invalid("", "Binding", name, [FieldError("target.name", "Required value")])
        if pod["spec"].get("nodeName"):
            raise conflict(
                "",
                "pods",
                name,
                f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
            )
        new = {**pod, "spec": {**pod["spec"], "nodeName": node}}
        self.store.write(("", "pods"), new, "MODIFIED")
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }


def _set_managed(obj: Obj, managed: list[Obj]) -> None:
    if managed:
        obj.setdefault("metadata", {})["managedFields"] = managed
    else:
        obj.get("metadata", {}).pop("managedFields", None)


def _key(obj: Obj) -> tuple[str, str]:
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


def _parse_rv(value: str) -> int:
    try:
        return int(value)
    except ValueError as err:
        raise bad_request(f'resourceVersion: Invalid value: "{value}": must be an integer') from err


def _encode_continue(revision: int, key: tuple[str, str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": "/".join(key)})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        namespace, _, name = str(data["start"]).partition("/")
        return int(data["rv"]), (namespace, name)
    except (ValueError, KeyError, TypeError) as err:
        raise bad_request(f"continue key is not valid: {err}") from err


def _format_time(timestamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
