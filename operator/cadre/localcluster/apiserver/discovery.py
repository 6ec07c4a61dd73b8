"""Discovery documents (``/api``, ``/apis``, group and group/version resource lists) and the
OpenAPI v2 and v3 documents ``kubectl`` reads to validate, patch and explain. Pure builders
over the registry."""

from __future__ import annotations

import copy
import hashlib
import json

from cadre.api.types import Obj
from cadre.localcluster.apiserver import builtin_schemas
from cadre.localcluster.apiserver.registry import SUBRESOURCE_VERBS, Registry, ResourceType

_SUBRESOURCE_KINDS = {
    "log": ("", "", "Pod"),
    "proxy": ("", "", "PodProxyOptions"),
    "binding": ("", "", "Binding"),
    "token": ("authentication.k8s.io", "v1", "TokenRequest"),
    "scale": ("autoscaling", "v1", "Scale"),
}
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."


def version_info() -> Obj:
    major, minor, _ = builtin_schemas.KUBERNETES_VERSION.split(".")
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{builtin_schemas.KUBERNETES_VERSION}+cadre.local",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "cpython",
        "platform": "linux/amd64",
    }


def api_versions(server_address: str) -> Obj:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _group(name: str, versions: list[str]) -> Obj:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(registry: Registry) -> Obj:
    groups = [_group(g, v) for g, v in registry.group_versions().items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: Registry, group: str) -> Obj | None:
    versions = registry.group_versions().get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(group, versions)}


def _resource_entries(rtype: ResourceType) -> list[Obj]:
    main: Obj = {
        "name": rtype.plural,
        "singularName": rtype.singular,
        "namespaced": rtype.namespaced,
        "kind": rtype.kind,
        "verbs": list(rtype.verbs),
        "storageVersionHash": hashlib.sha256(
            rtype.api_version.encode() + rtype.kind.encode()
        ).hexdigest()[:12],
    }
    if rtype.short_names:
        main["shortNames"] = list(rtype.short_names)
    if rtype.categories:
        main["categories"] = list(rtype.categories)
    entries = [main]
    for sub in rtype.subresources:
        group, version, kind = _SUBRESOURCE_KINDS.get(sub, ("", "", rtype.kind))
        entry: Obj = {
            "name": f"{rtype.plural}/{sub}",
            "singularName": "",
            "namespaced": rtype.namespaced,
            "kind": kind,
            "verbs": list(SUBRESOURCE_VERBS[sub]),
        }
        if group:
            entry.update(group=group, version=version)
        entries.append(entry)
    return entries


def api_resource_list(registry: Registry, group: str, version: str) -> Obj | None:
    types = registry.in_group_version(group, version)
    if not types:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [entry for t in types for entry in _resource_entries(t)],
    }


# ---------------------------------------------------------------------------------------------
# OpenAPI


def _definition_name(rtype: ResourceType) -> str:
    """``dev.cadre.v1alpha1.Task`` for CRs (reversed group, as kube-apiserver names them)."""
    if not rtype.custom:
        return builtin_schemas.definition_name(rtype.group, rtype.version, rtype.kind)
    return ".".join([*reversed(rtype.group.split(".")), rtype.version, rtype.kind])


def _gvk(rtype: ResourceType) -> Obj:
    return {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}


def _custom_schema(rtype: ResourceType, ref_prefix: str) -> Obj:
    """A CRD's schema as kube-apiserver publishes it: with the standard apiVersion, kind and
    metadata fields, and the GVK that ``kubectl explain`` looks for."""
    schema: Obj = copy.deepcopy(rtype.schema)
    properties = schema.setdefault("properties", {})
    pod = builtin_schemas.definitions()["io.k8s.api.core.v1.Pod"]["properties"]
    properties["apiVersion"] = {"type": "string", "description": pod["apiVersion"]["description"]}
    properties["kind"] = {"type": "string", "description": pod["kind"]["description"]}
    properties["metadata"] = {
        "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
        "allOf": [{"$ref": ref_prefix + builtin_schemas.OBJECT_META}],
    }
    schema["x-kubernetes-group-version-kind"] = [_gvk(rtype)]
    return schema


def _schemas(types: list[ResourceType], ref_prefix: str) -> Obj:
    names: set[str] = set(builtin_schemas.referenced(builtin_schemas.OBJECT_META))
    names |= builtin_schemas.referenced(_META + "Status")
    out: Obj = {}
    for rtype in types:
        if rtype.custom:
            out[_definition_name(rtype)] = _custom_schema(rtype, ref_prefix)
        else:
            names |= builtin_schemas.referenced(_definition_name(rtype))
    defs = builtin_schemas.definitions()
    for name in sorted(names):
        out[name] = builtin_schemas.openapi_schema(defs[name], ref_prefix)
    return out


def _path_prefix(rtype: ResourceType) -> str:
    base = f"/apis/{rtype.group}/{rtype.version}" if rtype.group else "/api/v1"
    return (
        f"{base}/namespaces/{{namespace}}/{rtype.plural}"
        if rtype.namespaced
        else f"{base}/{rtype.plural}"
    )


_QUERY_PARAMETERS = ("dryRun", "fieldManager", "fieldValidation", "force")


def _operations(rtype: ResourceType, v3: bool, ref_prefix: str) -> Obj:
    """The item path of a resource with its verbs: enough for kubectl's checks (it looks for
    the PATCH operation of a GVK and its ``fieldValidation`` parameter)."""
    ref = {"$ref": ref_prefix + _definition_name(rtype)}

    def param(name: str) -> Obj:
        return (
            {"name": name, "in": "query", "schema": {"type": "string"}}
            if v3
            else {"name": name, "in": "query", "type": "string", "uniqueItems": True}
        )

    def operation(action: str) -> Obj:
        op: Obj = {
            "operationId": f"{action}{rtype.kind}",
            "x-kubernetes-action": action,
            "x-kubernetes-group-version-kind": _gvk(rtype),
            "parameters": [param(p) for p in _QUERY_PARAMETERS]
            if action in ("patch", "put", "post")
            else [],
        }
        if v3:
            op["responses"] = {
                "200": {"description": "OK", "content": {"application/json": {"schema": ref}}}
            }
        else:
            op["responses"] = {"200": {"description": "OK", "schema": ref}}
        return op

    verbs = set(rtype.verbs)
    item: Obj = {}
    if "get" in verbs:
        item["get"] = operation("get")
    if "update" in verbs:
        item["put"] = operation("put")
    if "patch" in verbs:
        item["patch"] = operation("patch")
    if "delete" in verbs:
        item["delete"] = operation("delete")
    collection: Obj = {}
    if "create" in verbs:
        collection["post"] = operation("post")
    if "list" in verbs:
        collection["get"] = operation("list")
    paths = {}
    if collection:
        paths[_path_prefix(rtype)] = collection
    if item:
        paths[_path_prefix(rtype) + "/{name}"] = item
    return paths


def openapi_v3_paths(registry: Registry) -> Obj:
    paths = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            path = f"apis/{group}/{version}" if group else f"api/{version}"
            digest = (
                hashlib.sha512(
                    json.dumps(
                        openapi_v3_document(registry, group, version), sort_keys=True
                    ).encode()
                )
                .hexdigest()
                .upper()[:128]
            )
            paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
    return {"paths": paths}


def openapi_v3_document(registry: Registry, group: str, version: str) -> Obj:
    types = registry.in_group_version(group, version)
    prefix = "#/components/schemas/"
    paths: Obj = {}
    for rtype in types:
        paths.update(_operations(rtype, True, prefix))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": f"v{builtin_schemas.KUBERNETES_VERSION}"},
        "paths": paths,
        "components": {"schemas": _schemas(types, prefix)},
    }


def openapi_v2_document(registry: Registry) -> Obj:
    types = list(registry)
    prefix = "#/definitions/"
    paths: Obj = {}
    for rtype in types:
        paths.update(_operations(rtype, False, prefix))
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": f"v{builtin_schemas.KUBERNETES_VERSION}"},
        "paths": paths,
        "definitions": _schemas(types, prefix),
    }
