"""Decoding the protobuf request bodies kubectl sends for built-in kinds.

kubectl's typed ``create`` commands (``create namespace``, ``create secret``, ``create token``,
``auth can-i``, ...) and client-go's deletes (Helm's uninstall)
send ``application/vnd.kubernetes.protobuf``: the ``k8s\\0`` magic, then a
``runtime.Unknown`` holding the object. This module reads the protobuf wire format and turns
the messages those commands send into the JSON the rest of the server handles. The field
numbers are Kubernetes' (``generated.proto`` of each API group); every message listed here was
checked against bodies captured from kubectl 1.32. Other kinds get a 415 that says so.
"""

from __future__ import annotations

import base64
from typing import Any

from cadre.localcluster.apiserver.status import ApiError

MAGIC = b"k8s\x00"
Field = tuple[str, str, "Message | None"]
Message = dict[int, Field]
# Field kinds: s string, b bytes (base64 in JSON), i integer, t bool, m message, S repeated
# string, M repeated message, ss map<string,string>, sb map<string,bytes>, time (meta.v1.Time).
_OWNER_REFERENCE: Message = {
    1: ("kind", "s", None), 3: ("name", "s", None), 4: ("uid", "s", None),
    5: ("apiVersion", "s", None), 6: ("controller", "t", None),
    7: ("blockOwnerDeletion", "t", None),
}  # fmt: skip
_OBJECT_META: Message = {
    1: ("name", "s", None), 2: ("generateName", "s", None), 3: ("namespace", "s", None),
    5: ("uid", "s", None), 6: ("resourceVersion", "s", None), 7: ("generation", "i", None),
    11: ("labels", "ss", None), 12: ("annotations", "ss", None),
    13: ("ownerReferences", "M", _OWNER_REFERENCE), 14: ("finalizers", "S", None),
}  # fmt: skip
_POLICY_RULE: Message = {
    1: ("verbs", "S", None), 2: ("apiGroups", "S", None), 3: ("resources", "S", None),
    4: ("resourceNames", "S", None), 5: ("nonResourceURLs", "S", None),
}  # fmt: skip
_SUBJECT: Message = {
    1: ("kind", "s", None), 2: ("apiGroup", "s", None), 3: ("name", "s", None),
    4: ("namespace", "s", None),
}  # fmt: skip
_ROLE_REF: Message = {1: ("apiGroup", "s", None), 2: ("kind", "s", None), 3: ("name", "s", None)}
_BINDING: Message = {
    1: ("metadata", "m", _OBJECT_META), 2: ("subjects", "M", _SUBJECT),
    3: ("roleRef", "m", _ROLE_REF),
}  # fmt: skip
_RESOURCE_ATTRIBUTES: Message = {
    1: ("namespace", "s", None), 2: ("verb", "s", None), 3: ("group", "s", None),
    4: ("version", "s", None), 5: ("resource", "s", None), 6: ("subresource", "s", None),
    7: ("name", "s", None),
}  # fmt: skip
_NON_RESOURCE_ATTRIBUTES: Message = {1: ("path", "s", None), 2: ("verb", "s", None)}
_BOUND_OBJECT: Message = {
    1: ("kind", "s", None), 2: ("apiVersion", "s", None), 3: ("name", "s", None),
    4: ("uid", "s", None),
}  # fmt: skip
_DELETE_OPTIONS: Message = {
    1: ("gracePeriodSeconds", "i", None),
    2: ("preconditions", "m", {1: ("uid", "s", None), 2: ("resourceVersion", "s", None)}),
    3: ("orphanDependents", "t", None), 4: ("propagationPolicy", "s", None),
    5: ("dryRun", "S", None),
}  # fmt: skip
MESSAGES: dict[tuple[str, str], Message] = {
    # client-go (Helm's uninstall) sends the options of a DELETE as protobuf.
    ("v1", "DeleteOptions"): _DELETE_OPTIONS,
    ("meta.k8s.io/v1", "DeleteOptions"): _DELETE_OPTIONS,
    ("v1", "Namespace"): {
        1: ("metadata", "m", _OBJECT_META), 2: ("spec", "m", {1: ("finalizers", "S", None)}),
    },
    ("v1", "Secret"): {
        1: ("metadata", "m", _OBJECT_META), 2: ("data", "sb", None), 3: ("type", "s", None),
        4: ("stringData", "ss", None), 5: ("immutable", "t", None),
    },
    ("v1", "ConfigMap"): {
        1: ("metadata", "m", _OBJECT_META), 2: ("data", "ss", None),
        3: ("binaryData", "sb", None), 4: ("immutable", "t", None),
    },
    ("v1", "ServiceAccount"): {
        1: ("metadata", "m", _OBJECT_META),
        3: ("imagePullSecrets", "M", {1: ("name", "s", None)}),
        4: ("automountServiceAccountToken", "t", None),
    },
    ("rbac.authorization.k8s.io/v1", "Role"): {
        1: ("metadata", "m", _OBJECT_META), 2: ("rules", "M", _POLICY_RULE),
    },
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): {
        1: ("metadata", "m", _OBJECT_META), 2: ("rules", "M", _POLICY_RULE),
    },
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): _BINDING,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): _BINDING,
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): {
        1: ("metadata", "m", _OBJECT_META),
        2: ("spec", "m", {
            1: ("resourceAttributes", "m", _RESOURCE_ATTRIBUTES),
            2: ("nonResourceAttributes", "m", _NON_RESOURCE_ATTRIBUTES),
        }),
    },
    ("authentication.k8s.io/v1", "SelfSubjectReview"): {1: ("metadata", "m", _OBJECT_META)},
    ("authentication.k8s.io/v1", "TokenRequest"): {
        1: ("metadata", "m", _OBJECT_META),
        2: ("spec", "m", {
            1: ("audiences", "S", None), 3: ("boundObjectRef", "m", _BOUND_OBJECT),
            4: ("expirationSeconds", "i", None),
        }),
    },
}  # fmt: skip
_UNKNOWN: Message = {
    1: ("typeMeta", "m", {1: ("apiVersion", "s", None), 2: ("kind", "s", None)}),
    2: ("raw", "b", None),
}


class _MalformedError(Exception):
    pass


def _varint(data: bytes, index: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if index >= len(data) or shift > 63:
            raise _MalformedError("truncated varint")
        byte = data[index]
        index += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, index


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    index, found = 0, []
    while index < len(data):
        key, index = _varint(data, index)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, index = _varint(data, index)
        elif wire == 2:
            length, index = _varint(data, index)
            if index + length > len(data):
                raise _MalformedError("truncated field")
            value, index = data[index : index + length], index + length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, index = data[index : index + size], index + size
        else:
            raise _MalformedError(f"unsupported wire type {wire}")
        found.append((number, value))
    return found


def _decode(data: bytes, message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, value in _fields(data):
        if number not in message:
            continue
        name, kind, sub = message[number]
        if isinstance(value, int):
            if kind == "t":
                out[name] = bool(value)
            elif value:
                out[name] = value
            continue
        if kind == "s":
            if value:
                out[name] = value.decode()
        elif kind == "b":
            out[name] = value
        elif kind == "S":
            out.setdefault(name, []).append(value.decode())
        elif kind in ("m", "M") and sub is not None:
            decoded = _decode(value, sub)
            if kind == "M":
                out.setdefault(name, []).append(decoded)
            elif decoded:
                out[name] = decoded
        elif kind in ("ss", "sb"):
            entry = {n: v for n, v in _fields(value) if isinstance(v, bytes)}
            key = entry.get(1, b"").decode()
            raw = entry.get(2, b"")
            out.setdefault(name, {})[key] = (
                raw.decode() if kind == "ss" else base64.b64encode(raw).decode()
            )
    return out


def decode_body(data: bytes) -> dict[str, Any]:
    """A protobuf request body as the JSON object it stands for (415/400 when it cannot be)."""
    if not data.startswith(MAGIC):
        raise ApiError(
            400, "BadRequest", "protobuf body does not start with the Kubernetes magic number"
        )
    try:
        envelope = _decode(data[len(MAGIC) :], _UNKNOWN)
        type_meta = envelope.get("typeMeta", {})
        api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
        message = MESSAGES.get((api_version, kind))
        if message is None:
            supported = ", ".join(sorted(k for _, k in MESSAGES))
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the local cluster decodes protobuf bodies only for {supported}; send {kind}"
                " as JSON (kubectl apply -f, or kubectl create -f)",
            )
        obj = _decode(envelope.get("raw", b""), message)
    except _MalformedError as err:
        raise ApiError(400, "BadRequest", f"invalid protobuf body: {err}") from err
    return {"apiVersion": api_version, "kind": kind, **obj}
