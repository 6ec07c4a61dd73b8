"""Who is asking: bearer tokens, as kube-apiserver's token authenticators see them.

Two kinds of token exist: the admin token written into the kubeconfig, and service-account
tokens issued through the TokenRequest API (``serviceaccounts/token``, what a kubelet asks for
when a pod mounts one). A service-account token dies with its account, with the pod it is bound
to, or when it expires; it is opaque (not a JWT): no client of Cadre's reads inside it.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cadre.localcluster.apiserver.store import Store

ADMIN_USER = "kubernetes-admin"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...]
    uid: str = ""
    extra: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_admin(self) -> bool:
        return MASTERS in self.groups

    def to_user_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            info["uid"] = self.uid
        if self.extra:
            info["extra"] = {k: list(v) for k, v in self.extra.items()}
        return info


@dataclass(frozen=True)
class _Grant:
    namespace: str
    account: str
    account_uid: str
    expires: float
    pod: tuple[str, str] | None  # (name, uid) of the pod the token is bound to


def service_account_user(namespace: str, account: str, uid: str = "") -> User:
    return User(
        f"system:serviceaccount:{namespace}:{account}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", AUTHENTICATED),
        uid,
    )


class Authenticator:
    def __init__(self, store: Store, admin_token: str | None = None) -> None:
        self._store = store
        self.admin_token = admin_token or secrets.token_urlsafe(32)
        self._grants: dict[str, _Grant] = {}

    def issue(
        self,
        service_account: dict[str, Any],
        expiration_seconds: int,
        pod: dict[str, Any] | None = None,
    ) -> tuple[str, float]:
        meta = service_account["metadata"]
        token = "cadre-sa." + secrets.token_urlsafe(32)
        expires = time.time() + expiration_seconds
        bound = (pod["metadata"]["name"], pod["metadata"]["uid"]) if pod else None
        self._grants[token] = _Grant(meta["namespace"], meta["name"], meta["uid"], expires, bound)
        return token, expires

    def authenticate(self, header: str | None) -> User | None:
        """The user a request's ``Authorization`` header names, or None (401)."""
        # As kube-apiserver's bearer authenticator: the scheme in any case (the Python client's
        # in-cluster configuration sends "bearer"), one space, the token.
        scheme, _, token = (header or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            return None
        if hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return User(ADMIN_USER, (MASTERS, AUTHENTICATED))
        grant = self._grants.get(token)
        if grant is None or grant.expires < time.time():
            return None
        account = self._store.get(("", "serviceaccounts"), grant.namespace, grant.account)
        if account is None or account["metadata"]["uid"] != grant.account_uid:
            return None
        extra: dict[str, tuple[str, ...]] = {}
        if grant.pod is not None:
            pod = self._store.get(("", "pods"), grant.namespace, grant.pod[0])
            if pod is None or pod["metadata"]["uid"] != grant.pod[1]:
                return None
            extra = {
                "authentication.kubernetes.io/pod-name": (grant.pod[0],),
                "authentication.kubernetes.io/pod-uid": (grant.pod[1],),
            }
        user = service_account_user(grant.namespace, grant.account, grant.account_uid)
        return User(user.name, user.groups, user.uid, extra)
