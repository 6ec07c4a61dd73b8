"""Which resources the local API server serves: the built-in kinds Cadre uses, and every kind a
CustomResourceDefinition adds. Pure data; the server and discovery read it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cadre.localcluster.apiserver import builtin_schemas

STANDARD_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUBRESOURCE_VERBS = {
    "status": ("get", "patch", "update"),
    "log": ("get",),
    "proxy": ("create", "delete", "get", "patch", "update"),
    "token": ("create",),
    "binding": ("create",),
    "scale": ("get", "patch", "update"),
}


@dataclass(frozen=True)
class ResourceType:
    """One resource of one group/version, as discovery describes it."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    verbs: tuple[str, ...] = STANDARD_VERBS
    has_generation: bool = False
    """Whether ``metadata.generation`` counts spec changes (CRs, workloads, policies)."""
    schema: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    """Structural schema of the whole object."""
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False, hash=False)
    custom: bool = False
    """Defined by a CRD: validated with CEL and defaults, pruned, never strategic-merge patched."""
    virtual: bool = False
    """Create-only reviews (SelfSubjectAccessReview): computed, never stored."""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_resource(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def qualified(self) -> str:
        """``tasks.cadre.dev``; ``pods`` for the core group, as error messages write it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def group_version(self) -> str:
        return self.api_version


def _builtin(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: tuple[str, ...] = (),
    categories: tuple[str, ...] = (),
    sub: tuple[str, ...] = (),
    generation: bool = False,
    verbs: tuple[str, ...] = STANDARD_VERBS,
    virtual: bool = False,
) -> ResourceType:
    definition = builtin_schemas.definition_name(group, version, kind)
    return ResourceType(
        group,
        version,
        kind,
        plural,
        namespaced,
        short,
        categories,
        sub,
        verbs,
        generation,
        builtin_schemas.structural(definition),
        virtual=virtual,
    )


def builtin_types() -> list[ResourceType]:
    """The built-in kinds Cadre, kubectl and kopf use. docs/localcluster.md says which are
    only stored and which have behaviour behind them."""
    return [
        _builtin("", "v1", "Namespace", "namespaces", namespaced=False, short=("ns",),
                 sub=("status",)),
        _builtin("", "v1", "Pod", "pods", short=("po",), categories=("all",),
                 sub=("status", "log", "proxy", "binding")),
        _builtin("", "v1", "Service", "services", short=("svc",), categories=("all",),
                 sub=("status",)),
        _builtin("", "v1", "Endpoints", "endpoints", short=("ep",)),
        _builtin("", "v1", "Secret", "secrets"),
        _builtin("", "v1", "ConfigMap", "configmaps", short=("cm",)),
        _builtin("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",),
                 sub=("status",)),
        _builtin("", "v1", "ServiceAccount", "serviceaccounts", short=("sa",), sub=("token",)),
        _builtin("", "v1", "Event", "events", short=("ev",)),
        _builtin("", "v1", "Node", "nodes", namespaced=False, short=("no",), sub=("status",)),
        _builtin("apps", "v1", "StatefulSet", "statefulsets", short=("sts",),
                 categories=("all",), sub=("status", "scale"), generation=True),
        _builtin("apps", "v1", "Deployment", "deployments", short=("deploy",),
                 categories=("all",), sub=("status", "scale"), generation=True),
        _builtin("apps", "v1", "ReplicaSet", "replicasets", short=("rs",),
                 categories=("all",), sub=("status", "scale"), generation=True),
        _builtin("batch", "v1", "Job", "jobs", categories=("all",), sub=("status",),
                 generation=True),
        _builtin("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies",
                 short=("netpol",), generation=True),
        _builtin("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        _builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        _builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles",
                 namespaced=False),
        _builtin("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
                 namespaced=False),
        _builtin("coordination.k8s.io", "v1", "Lease", "leases"),
        _builtin("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicy",
                 "validatingadmissionpolicies", namespaced=False, sub=("status",),
                 generation=True),
        _builtin("admissionregistration.k8s.io", "v1", "ValidatingAdmissionPolicyBinding",
                 "validatingadmissionpolicybindings", namespaced=False, generation=True),
        _builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition",
                 "customresourcedefinitions", namespaced=False, short=("crd", "crds"),
                 sub=("status",), generation=True),
        _builtin("authorization.k8s.io", "v1", "SelfSubjectAccessReview",
                 "selfsubjectaccessreviews", namespaced=False, verbs=("create",), virtual=True),
        _builtin("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews",
                 namespaced=False, verbs=("create",), virtual=True),
    ]  # fmt: skip


def types_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The resource types a CRD serves, one per served version."""
    spec = crd["spec"]
    names = spec["names"]
    found = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = version.get("schema", {}).get("openAPIV3Schema", {"type": "object"})
        sub = ("status",) if "status" in version.get("subresources", {}) else ()
        found.append(
            ResourceType(
                spec["group"],
                version["name"],
                names["kind"],
                names["plural"],
                spec["scope"] == "Namespaced",
                tuple(names.get("shortNames", ())),
                tuple(names.get("categories", ())),
                sub,
                STANDARD_VERBS,
                True,
                schema,
                tuple(version.get("additionalPrinterColumns", ())),
                custom=True,
            )
        )
    return found


class Registry:
    """Resource types by group, version and plural; rebuilt as CRDs come and go."""

    def __init__(self) -> None:
        self._builtin = builtin_types()
        self._custom: dict[str, list[ResourceType]] = {}
        self._by_path: dict[tuple[str, str, str], ResourceType] = {}
        self.generation = 0
        """Counts changes, so documents built from the registry know when to rebuild."""
        self._reindex()

    def _reindex(self) -> None:
        self._by_path = {(t.group, t.version, t.plural): t for t in self}
        self.generation += 1

    def __iter__(self) -> Iterator[ResourceType]:
        yield from self._builtin
        for types in self._custom.values():
            yield from types

    def set_crd(self, crd: dict[str, Any]) -> None:
        self._custom[crd["metadata"]["name"]] = types_from_crd(crd)
        self._reindex()

    def remove_crd(self, name: str) -> None:
        self._custom.pop(name, None)
        self._reindex()

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def by_group_resource(self, group: str, plural: str) -> ResourceType | None:
        return next((t for t in self if t.group == group and t.plural == plural), None)

    def group_versions(self) -> dict[str, list[str]]:
        """Served versions by group, in the order discovery lists them."""
        groups: dict[str, list[str]] = {}
        for rtype in self:
            versions = groups.setdefault(rtype.group, [])
            if rtype.version not in versions:
                versions.append(rtype.version)
        return groups

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [t for t in self if t.group == group and t.version == version]
