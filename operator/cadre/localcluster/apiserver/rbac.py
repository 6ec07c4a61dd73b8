"""RBAC as kube-apiserver's authorizer evaluates it: ClusterRoleBindings grant their
ClusterRole's rules everywhere, RoleBindings grant a Role's (or ClusterRole's) rules in their
namespace. ``system:masters`` bypasses RBAC, as in a real cluster. Aggregated ClusterRoles
(``aggregationRule``) are not computed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cadre.localcluster.apiserver.authn import AUTHENTICATED, User
from cadre.localcluster.apiserver.store import Store

RBAC = "rbac.authorization.k8s.io"


@dataclass(frozen=True)
class Attributes:
    """What a request does, as the authorizer sees it."""

    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""
    """Set for non-resource requests (``/version``, ``/openapi/v3``)."""

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)


def _subject_matches(subject: dict[str, Any], user: User, binding_namespace: str) -> bool:
    kind = subject.get("kind")
    if kind == "User":
        return bool(subject.get("name") == user.name)
    if kind == "Group":
        return subject.get("name") in user.groups
    if kind == "ServiceAccount":
        namespace = subject.get("namespace") or binding_namespace
        return user.name == f"system:serviceaccount:{namespace}:{subject.get('name')}"
    return False


def _rule_allows(rule: dict[str, Any], attrs: Attributes) -> bool:
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs.verb not in verbs:
        return False
    if not attrs.is_resource:
        return any(
            url == attrs.path or (url.endswith("*") and attrs.path.startswith(url[:-1]))
            for url in rule.get("nonResourceURLs") or []
        )
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs.group not in groups:
        return False
    wanted = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    resources = rule.get("resources") or []
    resource_ok = (
        "*" in resources
        or wanted in resources
        or (attrs.subresource and f"*/{attrs.subresource}" in resources)
    )
    if not resource_ok:
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.name in names


class Authorizer:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _role_rules(self, ref: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
        if ref.get("kind") == "ClusterRole":
            role = self._store.get((RBAC, "clusterroles"), "", ref.get("name", ""))
        else:
            role = self._store.get((RBAC, "roles"), namespace, ref.get("name", ""))
        return list(role.get("rules") or []) if role else []

    def rules_for(self, user: User, namespace: str) -> Iterator[dict[str, Any]]:
        """Every rule that applies to ``user`` in ``namespace`` ("" for cluster scope)."""
        for binding in self._store.items((RBAC, "clusterrolebindings")):
            if any(_subject_matches(s, user, "") for s in binding.get("subjects") or []):
                yield from self._role_rules(binding.get("roleRef", {}), "")
        if namespace:
            for binding in self._store.items((RBAC, "rolebindings"), namespace):
                if any(_subject_matches(s, user, namespace) for s in binding.get("subjects") or []):
                    yield from self._role_rules(binding.get("roleRef", {}), namespace)

    def allowed(self, user: User, attrs: Attributes) -> bool:
        if user.is_admin:
            return True
        return any(_rule_allows(rule, attrs) for rule in self.rules_for(user, attrs.namespace))


def forbidden_message(user: User, attrs: Attributes) -> str:
    """The message of a 403, word for word as kube-apiserver's RBAC denial reads."""
    if not attrs.is_resource:
        return f'forbidden: User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
    qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    where = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    return (
        f'{subject} is forbidden: User "{user.name}" cannot {attrs.verb} resource "{resource}"'
        f' in API group "{attrs.group}" {where}'
    )


def bootstrap_policy() -> list[tuple[tuple[str, str], dict[str, Any]]]:
    """The default ClusterRoles and bindings every cluster starts with (the subset that lets
    any authenticated client discover the API and ask what it may do)."""
    discovery_urls = ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*",
                      "/version", "/version/", "/healthz", "/livez", "/readyz"]  # fmt: skip

    def role(name: str, rules: list[dict[str, Any]]) -> tuple[tuple[str, str], dict[str, Any]]:
        return (RBAC, "clusterroles"), {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": rules,
        }

    def binding(name: str, group: str) -> tuple[tuple[str, str], dict[str, Any]]:
        return (RBAC, "clusterrolebindings"), {
            "apiVersion": f"{RBAC}/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name},
            "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": group}],
        }

    return [
        role("cluster-admin", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                               {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        role("system:discovery", [{"nonResourceURLs": discovery_urls, "verbs": ["get"]}]),
        role("system:basic-user", [
            {"apiGroups": ["authorization.k8s.io"],
             "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
             "verbs": ["create"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"],
             "verbs": ["create"]},
        ]),
        binding("system:discovery", AUTHENTICATED),
        binding("system:basic-user", AUTHENTICATED),
    ]  # fmt: skip
