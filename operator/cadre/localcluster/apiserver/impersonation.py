"""``Impersonate-*`` headers (``kubectl --as``, ``--as-group``, ``--as-uid``), as
kube-apiserver's impersonation filter handles them: the authenticated user must be allowed the
``impersonate`` verb on each thing it asks to be (``users``, ``groups``, ``uids``,
``serviceaccounts`` in their namespace, ``userextras/<key>``), and the request then runs as the
impersonated user with that user's rights only. Before this, the headers were ignored and
``kubectl --as=someone`` silently ran as the caller, usually the admin: a test of a Role with
``--as`` passed whatever the Role said.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from cadre.localcluster.apiserver.authn import AUTHENTICATED, User, service_account_user
from cadre.localcluster.apiserver.rbac import Attributes
from cadre.localcluster.apiserver.status import bad_request, forbidden

USER = "Impersonate-User"
GROUP = "Impersonate-Group"
UID = "Impersonate-Uid"
EXTRA_PREFIX = "Impersonate-Extra-"
_SERVICE_ACCOUNT = "system:serviceaccount:"
AUTHN_GROUP = "authentication.k8s.io"


def _check(allowed: Callable[[User, Attributes], bool], user: User, attrs: Attributes) -> None:
    if allowed(user, attrs):
        return
    scope = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
    raise forbidden(
        f'{attrs.resource} "{attrs.name}" is forbidden: User "{user.name}" cannot impersonate '
        f'resource "{resource}" in API group "{attrs.group}" {scope}',
        attrs.group,
        attrs.resource,
        attrs.name,
    )


def impersonated(
    headers: Iterable[tuple[str, str]],
    user: User,
    allowed: Callable[[User, Attributes], bool],
) -> User:
    """The user a request runs as: ``user`` itself without impersonation headers, else the one
    they name, once ``user`` is allowed to be it. ``ApiError`` 400 for groups, a uid or extras
    without a user (as kube-apiserver), 403 naming what may not be impersonated."""
    name: str | None = None
    groups: list[str] = []
    uid = ""
    extra: dict[str, list[str]] = {}
    for key, value in headers:
        lowered = key.lower()
        if lowered == USER.lower():
            name = value
        elif lowered == GROUP.lower():
            groups.append(value)
        elif lowered == UID.lower():
            uid = value
        elif lowered.startswith(EXTRA_PREFIX.lower()):
            extra.setdefault(lowered.removeprefix(EXTRA_PREFIX.lower()), []).append(value)
    if name is None:
        if groups or uid or extra:
            raise bad_request(
                "requested impersonation of groups, a uid or extras without impersonating a user"
            )
        return user
    if not name:
        raise bad_request("Impersonate-User must not be empty")
    base_groups: tuple[str, ...] = ()
    if name.startswith(_SERVICE_ACCOUNT):
        namespace, _, account = name.removeprefix(_SERVICE_ACCOUNT).partition(":")
        if not namespace or not account:
            raise bad_request(f'"{name}" is not a service account name (NAMESPACE:NAME)')
        wanted = Attributes("impersonate", "", "serviceaccounts", "", namespace, account)
        _check(allowed, user, wanted)
        base_groups = service_account_user(namespace, account).groups
    else:
        _check(allowed, user, Attributes("impersonate", "", "users", name=name))
    for group in groups:
        _check(allowed, user, Attributes("impersonate", "", "groups", name=group))
    if uid:
        _check(allowed, user, Attributes("impersonate", AUTHN_GROUP, "uids", name=uid))
    for key, values in extra.items():
        for value in values:
            wanted = Attributes("impersonate", AUTHN_GROUP, "userextras", key, name=value)
            _check(allowed, user, wanted)
    all_groups = tuple(dict.fromkeys([*base_groups, *groups, AUTHENTICATED]))
    return User(name, all_groups, uid, {k: tuple(v) for k, v in extra.items()})
