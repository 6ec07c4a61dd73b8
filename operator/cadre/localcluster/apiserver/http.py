"""HTTP helpers of the API server: what a resource path names, which verb a request is, how
bodies are read and answers written. Pure functions of the request, no server state."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import yaml
from aiohttp import web

from cadre.localcluster.apiserver import protobuf
from cadre.localcluster.apiserver.registry import ResourceType
from cadre.localcluster.apiserver.status import (
    ApiError,
    bad_request,
    method_not_allowed,
    path_not_found,
)

MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's limit for a request body
TRUE = ("true", "1")


@dataclass(frozen=True)
class Target:
    """What a resource path names."""

    rtype: ResourceType
    namespace: str
    name: str = ""
    subresource: str = ""
    rest: str = ""
    """The path after ``proxy/``."""


def client_of(user_agent: str) -> str:
    """``kubectl`` from ``kubectl/v1.32.4 (linux/amd64) kubernetes/...``."""
    return user_agent.split("/", 1)[0].split(" ", 1)[0] or "unknown"


def json_response(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    headers = {}
    if warnings:
        headers["Warning"] = ", ".join(
            f'299 - "{w.replace(chr(34), chr(92) + chr(34))}"' for w in warnings
        )
    return web.Response(
        body=json.dumps(body).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def wants_table(request: web.Request) -> bool:
    return any("as=Table" in part for part in request.headers.get("Accept", "").split(","))


def flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter (``true`` or ``1``)."""
    return request.query.get(name, "").lower() in TRUE


def int_param(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as err:
        raise bad_request(f'{name}: Invalid value: "{value}": must be an integer') from err


def content_type(request: web.Request, default: str = "") -> str:
    return request.headers.get("Content-Type", default).split(";")[0].strip()


async def read_body(request: web.Request) -> Any:
    """The request's body decoded from JSON, YAML or protobuf; too large or unreadable is a
    Status naming why."""
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise ApiError(
            413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY}"
        )
    kind = content_type(request, "application/json")
    if kind == "application/vnd.kubernetes.protobuf":
        return protobuf.decode_body(raw)
    try:
        if kind in ("application/yaml", "application/apply-patch+yaml"):
            return yaml.safe_load(raw)
        return json.loads(raw) if raw else None
    except (ValueError, yaml.YAMLError) as err:
        raise bad_request(f"couldn't get version/kind; json parse error: {err}") from err


def field_manager(request: web.Request) -> str:
    """Who makes a write, for managedFields: ``fieldManager``, else the User-Agent's program
    (before its first ``/``), as kube-apiserver derives it."""
    given = request.query.get("fieldManager", "")
    if len(given) > 128:
        raise bad_request("fieldManager: Too long: may not be more than 128 bytes")
    agent = request.headers.get("User-Agent", "")
    return given or agent.split("/", 1)[0][:128] or "unknown"


def group_version(parts: list[str]) -> tuple[str, str | None, list[str]]:
    """``(group, version, rest)`` of a path under ``/api`` or ``/apis``; no version for a
    discovery path."""
    if parts[0] == "api":
        return "", (parts[1] if len(parts) > 1 else None), parts[2:]
    if len(parts) < 3:
        return (parts[1] if len(parts) > 1 else ""), None, []
    return parts[1], parts[2], parts[3:]


def item(rtype: ResourceType, namespace: str, rest: list[str]) -> Target:
    """The object and subresource ``rest`` names within a resource."""
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if sub and sub not in rtype.subresources:
        raise path_not_found()
    if len(rest) > 3 and sub != "proxy":
        raise path_not_found()
    return Target(rtype, namespace, name, sub, "/".join(rest[3:]))


_PROXY_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


def verb(request: web.Request, target: Target) -> str:
    """The RBAC verb of a request, as kube-apiserver derives it."""
    method = request.method
    if target.subresource == "proxy":
        return _PROXY_VERBS.get(method, "get")
    if method in ("GET", "HEAD"):
        if target.name:
            return "get"
        return "watch" if flag(request, "watch") else "list"
    verbs = {"POST": "create", "PUT": "update", "PATCH": "patch"}
    if method in verbs:
        return verbs[method]
    if method == "DELETE":
        return "delete" if target.name else "deletecollection"
    raise method_not_allowed()
