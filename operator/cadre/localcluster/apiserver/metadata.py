"""Object metadata as the API server manages it: names, generateName, uid, timestamps,
generation and finalizers. Pure functions; the cluster calls them on every write."""

from __future__ import annotations

import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from cadre.localcluster.apiserver.crdschema import FieldError

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_HELP = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or"
    " '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used"
    " for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_HELP = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and"
    " must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex"
    " used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_DNS_1035_HELP = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an"
    " alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or"
    " 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
# Kinds whose names are DNS labels (their names become hostnames or path segments).
_LABEL_NAMED = {"Namespace"}
_DNS_1035_NAMED = {"Service"}
# RBAC objects only need names that are valid path segments ("system:discovery").
_PATH_SEGMENT_NAMED = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
# Characters generateName appends (k8s.io/apiserver/pkg/storage/names: no vowels, no 0/1/3).
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_SERVER_OWNED = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds")


def now() -> str:
    """A timestamp as Kubernetes writes it: RFC 3339, UTC, whole seconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def generated_name(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))


def validate_name(kind: str, name: str) -> list[FieldError]:
    if kind in _PATH_SEGMENT_NAMED:
        if name in (".", "..") or "/" in name or "%" in name:
            return [
                FieldError(
                    "metadata.name", "Invalid value", "may not contain '/' or '%'", name, True
                )
            ]
        return []
    if kind in _LABEL_NAMED:
        pattern, help_text, limit = _DNS_LABEL, _LABEL_HELP, 63
    elif kind in _DNS_1035_NAMED:
        pattern, help_text, limit = _DNS_1035, _DNS_1035_HELP, 63
    else:
        pattern, help_text, limit = _DNS_SUBDOMAIN, _SUBDOMAIN_HELP, 253
    errors = []
    if len(name) > limit:
        errors.append(
            FieldError(
                "metadata.name",
                "Invalid value",
                f"must be no more than {limit} characters",
                name,
                True,
            )
        )
    if not pattern.match(name):
        errors.append(FieldError("metadata.name", "Invalid value", help_text, name, True))
    return errors


def validate_labels(meta: dict[str, Any]) -> list[FieldError]:
    from cadre.localcluster.apiserver.selectors import _LABEL_KEY, _LABEL_VALUE

    errors = []
    for key, value in (meta.get("labels") or {}).items():
        if not _LABEL_KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
            errors.append(
                FieldError(
                    "metadata.labels",
                    "Invalid value",
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and"
                    " must start and end with an alphanumeric character",
                    key,
                    True,
                )
            )
        if not isinstance(value, str) or not _LABEL_VALUE.match(value) or len(value) > 63:
            errors.append(
                FieldError(
                    "metadata.labels",
                    "Invalid value",
                    "a valid label must be an empty string or consist of alphanumeric"
                    " characters, '-', '_' or '.', and must start and end with an alphanumeric"
                    " character",
                    value,
                    True,
                )
            )
    return errors


def for_create(meta: dict[str, Any], namespace: str, has_generation: bool) -> dict[str, Any]:
    """The metadata a new object is stored with; the caller has checked name/generateName."""
    out = {
        k: v for k, v in meta.items() if k not in (*_SERVER_OWNED, "resourceVersion", "generation")
    }
    if not out.get("name") and out.get("generateName"):
        out["name"] = generated_name(out["generateName"])
    if namespace:
        out["namespace"] = namespace
    else:
        out.pop("namespace", None)
    out["uid"] = str(uuid.uuid4())
    out["creationTimestamp"] = now()
    if has_generation:
        out["generation"] = 1
    return out


def for_update(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """Metadata of an update: the fields the server owns are kept from the stored object."""
    out = {k: v for k, v in new.items() if k not in (*_SERVER_OWNED, "generation")}
    for key in (*_SERVER_OWNED, "generation", "name", "namespace"):
        if key in old:
            out[key] = old[key]
    return out


def content(obj: dict[str, Any]) -> dict[str, Any]:
    """What ``generation`` counts changes of: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def same_object(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether an update changes nothing (the server then writes nothing, keeps the RV)."""

    def comparable(obj: dict[str, Any]) -> dict[str, Any]:
        # managedFields count: a change of ownership is a write, as in Kubernetes (an entry
        # whose fields did not change keeps its time, so a repeated write is still none).
        meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
        return {**obj, "metadata": meta}

    return comparable(a) == comparable(b)
