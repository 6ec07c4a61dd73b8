"""The local cluster's API server over HTTPS (aiohttp): authentication, RBAC, discovery,
OpenAPI, the REST verbs, watches, tables, and the pod ``log``/``proxy`` subresources.

The object semantics live in ``cluster``; this module only maps HTTP onto them, the way
kube-apiserver's handler chain does (authenticate, drop the Authorization header, authorize,
count, serve).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from cadre.api.types import Obj
from cadre.localcluster import discovery, patches, protobuf, tables
from cadre.localcluster.authn import Authenticator, User
from cadre.localcluster.cluster import Cluster
from cadre.localcluster.controllers import Controllers
from cadre.localcluster.faults import Faults
from cadre.localcluster.kubeconfig import build_kubeconfig, render_kubeconfig
from cadre.localcluster.rbac import Attributes, Authorizer, bootstrap_policy, forbidden_message
from cadre.localcluster.registry import Registry, ResourceType
from cadre.localcluster.selectors import matcher
from cadre.localcluster.status import (
    ApiError,
    bad_request,
    forbidden,
    gone,
    method_not_allowed,
    path_not_found,
    unauthorized,
)
from cadre.localcluster.store import Change, Store, TooOldError
from cadre.localcluster.tls import Certificates, issue

log = logging.getLogger(__name__)
MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's limit for a request body
_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_TRUE = ("true", "1")
_PROXY_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "content-length",
}


class LogSource(Protocol):
    """Where the ``log`` subresource reads from: the process kubelet registers one."""

    def stream(
        self,
        pod: Obj,
        container: str,
        follow: bool,
        tail_lines: int | None,
        timestamps: bool,
        previous: bool = False,
    ) -> AsyncIterator[bytes]: ...


@dataclass(frozen=True)
class Target:
    """What a resource path names."""

    rtype: ResourceType
    namespace: str
    name: str = ""
    subresource: str = ""
    rest: str = ""
    """The path after ``proxy/``."""


def _client_of(user_agent: str) -> str:
    """``kubectl`` from ``kubectl/v1.32.4 (linux/amd64) kubernetes/...``."""
    return user_agent.split("/", 1)[0].split(" ", 1)[0] or "unknown"


def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
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


def _wants_table(request: web.Request) -> bool:
    return any("as=Table" in part for part in request.headers.get("Accept", "").split(","))


def _int_param(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as err:
        raise bad_request(f'{name}: Invalid value: "{value}": must be an integer') from err


class LocalApiServer:
    """One in-memory API server. ``await start()`` binds it; ``kubeconfig()`` says how to reach
    it; ``request_counts()`` tells who asked what (tests and benchmarks read it)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        crd_dir: Path | None = None,
        admin_token: str | None = None,
        history: int = 20_000,
        bookmark_interval: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self.store = Store(history)
        self.registry = Registry()
        self.cluster = Cluster(self.store, self.registry)
        self.authenticator = Authenticator(self.store, admin_token)
        self.authorizer = Authorizer(self.store)
        self.faults = Faults()
        """Errors tests ask for (``faults.inject``); none by default."""
        self.bookmark_interval = bookmark_interval
        self.log_source: LogSource | None = None
        self._crd_dir = crd_dir
        self._certs: Certificates | None = None
        self._controllers: Controllers | None = None
        self._runner: web.AppRunner | None = None
        self._openapi_cache: dict[tuple[int, str], bytes] = {}
        self._watches: set[asyncio.Task[Any]] = set()
        self.metrics = CollectorRegistry()
        self._requests = Counter(
            "apiserver_request",
            "Requests served, by verb, group, resource, subresource, client and code.",
            ["verb", "group", "resource", "subresource", "client", "code"],
            registry=self.metrics,
        )

    # -----------------------------------------------------------------------------------------
    # Lifecycle

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_pem(self) -> str:
        assert self._certs is not None, "start() first"
        return self._certs.ca_pem

    @property
    def admin_token(self) -> str:
        return self.authenticator.admin_token

    def kubeconfig(self, namespace: str = "default") -> str:
        return render_kubeconfig(
            build_kubeconfig(self.url, self.ca_pem, self.admin_token, namespace)
        )

    async def start(self) -> None:
        self._certs = issue([self.host, "localhost"])
        self._bootstrap()
        self._controllers = Controllers(self.cluster, self._certs.ca_pem)
        self._controllers.start()
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, ssl_context=self._certs.server_context
        )
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        log.info("local API server listening on %s", self.url)

    async def stop(self) -> None:
        for task in list(self._watches):
            task.cancel()
        if self._controllers is not None:
            await self._controllers.stop()
        if self._runner is not None:
            server = self._runner.server
            if server is not None:
                # Stop means stop: a client still holding a keep-alive connection would keep
                # its TLS shutdown waiting for the peer's close_notify.
                for handler in server.connections:
                    if handler.transport is not None:
                        handler.transport.abort()
            await self._runner.cleanup()

    def _bootstrap(self) -> None:
        namespaces = self.registry.lookup("", "v1", "namespaces")
        assert namespaces is not None
        for name in _SYSTEM_NAMESPACES:
            self.cluster.create(
                namespaces,
                "",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )
        for (group, plural), body in bootstrap_policy():
            rtype = self.registry.by_group_resource(group, plural)
            assert rtype is not None
            self.cluster.create(rtype, "", body)
        if self._crd_dir is not None:
            crds = self.registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            assert crds is not None
            for path in sorted(self._crd_dir.glob("*.yaml")):
                for doc in yaml.safe_load_all(path.read_text()):
                    if doc:
                        self.cluster.create(crds, "", doc, "Strict")

    def request_counts(self) -> dict[tuple[str, str, str, str, str], float]:
        """Requests so far by (verb, group, resource, subresource, client), all codes summed."""
        counts: dict[tuple[str, str, str, str, str], float] = {}
        for metric in self.metrics.collect():
            for sample in metric.samples:
                if sample.name != "apiserver_request_total":
                    continue
                labels = sample.labels
                key = (
                    labels["verb"],
                    labels["group"],
                    labels["resource"],
                    labels["subresource"],
                    labels["client"],
                )
                counts[key] = counts.get(key, 0) + sample.value
        return counts

    # -----------------------------------------------------------------------------------------
    # The handler chain

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        labels = {
            "verb": request.method.lower(),
            "group": "",
            "resource": "",
            "subresource": "",
            "client": _client_of(request.headers.get("User-Agent", "")),
        }
        code = 500
        try:
            user = self.authenticator.authenticate(request.headers.get("Authorization"))
            if user is None:
                raise unauthorized()
            response = await self._serve(request, user, labels)
            code = response.status
            return response
        except ApiError as err:
            code = err.code
            response = _json(err.status(), err.code)
            retry = (err.details or {}).get("retryAfterSeconds")
            if retry is not None:
                response.headers["Retry-After"] = str(retry)
            return response
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.path)
            code = 500
            return _json(
                ApiError(
                    500,
                    "InternalError",
                    "an error on the server has prevented the request from succeeding",
                ).status(),
                500,
            )
        finally:
            if labels.pop("counted", "") != "yes":
                self._requests.labels(**labels, code=str(code)).inc()

    async def _serve(
        self, request: web.Request, user: User, labels: dict[str, str]
    ) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts or parts[0] not in ("api", "apis"):
            return await self._non_resource(request, user, parts)
        group, version, rest = self._group_version(parts)
        if version is None:
            self._authorize(user, Attributes("get", path=request.path))
            return self._discovery(parts, group)
        if not rest:
            self._authorize(user, Attributes("get", path=request.path))
            listing = discovery.api_resource_list(self.registry, group, version)
            if listing is None:
                raise path_not_found()
            return _json(listing)
        target = self._target(group, version, rest)
        verb = self._verb(request, target)
        labels.update(
            verb=verb,
            group=target.rtype.group,
            resource=target.rtype.plural,
            subresource=target.subresource,
        )
        self._authorize(
            user,
            Attributes(
                verb,
                target.rtype.group,
                target.rtype.plural,
                target.subresource,
                target.namespace,
                target.name,
            ),
        )
        self.faults.check(verb, target.rtype.plural, target.subresource, labels["client"])
        return await self._resource(request, user, target, verb, labels)

    def _authorize(self, user: User, attrs: Attributes) -> None:
        if not self.authorizer.allowed(user, attrs):
            raise forbidden(forbidden_message(user, attrs), attrs.group, attrs.resource, attrs.name)

    @staticmethod
    def _group_version(parts: list[str]) -> tuple[str, str | None, list[str]]:
        if parts[0] == "api":
            return "", (parts[1] if len(parts) > 1 else None), parts[2:]
        if len(parts) < 3:
            return (parts[1] if len(parts) > 1 else ""), None, []
        return parts[1], parts[2], parts[3:]

    def _discovery(self, parts: list[str], group: str) -> web.Response:
        if parts == ["api"]:
            return _json(discovery.api_versions(f"{self.host}:{self.port}"))
        if parts == ["apis"]:
            return _json(discovery.api_group_list(self.registry))
        found = discovery.api_group(self.registry, group)
        if found is None:
            raise path_not_found()
        return _json(found)

    def _target(self, group: str, version: str, rest: list[str]) -> Target:
        def lookup(plural: str) -> ResourceType:
            rtype = self.registry.lookup(group, version, plural)
            if rtype is None:
                raise path_not_found()
            return rtype

        if rest[0] == "namespaces" and len(rest) >= 3:
            candidate = self.registry.lookup(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
                return self._item(candidate, namespace, rest)
        rtype = lookup(rest[0])
        if rtype.namespaced and len(rest) > 1:
            raise path_not_found()
        return self._item(rtype, "", rest)

    @staticmethod
    def _item(rtype: ResourceType, namespace: str, rest: list[str]) -> Target:
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if sub and sub not in rtype.subresources:
            raise path_not_found()
        if len(rest) > 3 and sub != "proxy":
            raise path_not_found()
        return Target(rtype, namespace, name, sub, "/".join(rest[3:]))

    @staticmethod
    def _verb(request: web.Request, target: Target) -> str:
        method = request.method
        if target.subresource == "proxy":
            return {
                "GET": "get",
                "HEAD": "get",
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete",
            }.get(method, "get")
        if method in ("GET", "HEAD"):
            if target.name:
                return "get"
            return "watch" if request.query.get("watch", "").lower() in _TRUE else "list"
        verbs = {"POST": "create", "PUT": "update", "PATCH": "patch"}
        if method in verbs:
            return verbs[method]
        if method == "DELETE":
            return "delete" if target.name else "deletecollection"
        raise method_not_allowed()

    # -----------------------------------------------------------------------------------------
    # Non-resource paths

    async def _non_resource(
        self, request: web.Request, user: User, parts: list[str]
    ) -> web.Response:
        self._authorize(
            user,
            Attributes(
                request.method.lower() if request.method != "HEAD" else "get", path=request.path
            ),
        )
        path = "/" + "/".join(parts)
        if path == "/version":
            return _json(discovery.version_info())
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/metrics":
            return web.Response(body=generate_latest(self.metrics), content_type="text/plain")
        if path == "/openapi/v2":
            return self._openapi("v2", lambda: discovery.openapi_v2_document(self.registry))
        if path == "/openapi/v3":
            return self._openapi("v3", lambda: discovery.openapi_v3_paths(self.registry))
        if path.startswith("/openapi/v3/"):
            gv = path.removeprefix("/openapi/v3/").split("/")
            group, version = (
                ("", gv[1])
                if gv[0] == "api" and len(gv) == 2
                else (gv[1], gv[2])
                if len(gv) == 3
                else ("", "")
            )
            if not version or not self.registry.in_group_version(group, version):
                raise path_not_found()
            return self._openapi(
                path, lambda: discovery.openapi_v3_document(self.registry, group, version)
            )
        raise path_not_found()

    def _openapi(self, key: str, build: Any) -> web.Response:
        cache_key = (self.registry.generation, key)
        body = self._openapi_cache.get(cache_key)
        if body is None:
            body = json.dumps(build()).encode()
            self._openapi_cache = {
                k: v for k, v in self._openapi_cache.items() if k[0] == self.registry.generation
            }
            self._openapi_cache[cache_key] = body
        return web.Response(body=body, content_type="application/json")

    # -----------------------------------------------------------------------------------------
    # Resources

    async def _read_body(self, request: web.Request) -> Any:
        raw = await request.read()
        if len(raw) > MAX_BODY:
            raise ApiError(
                413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY}"
            )
        content_type = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        if content_type == "application/apply-patch+yaml":
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "server-side apply is not supported by the Cadre local cluster; use client-side"
                " `kubectl apply`",
            )
        if content_type == "application/vnd.kubernetes.protobuf":
            return protobuf.decode_body(raw)
        try:
            if content_type == "application/yaml":
                return yaml.safe_load(raw)
            return json.loads(raw) if raw else None
        except (ValueError, yaml.YAMLError) as err:
            raise bad_request(f"couldn't get version/kind; json parse error: {err}") from err

    async def _resource(
        self, request: web.Request, user: User, target: Target, verb: str, labels: dict[str, str]
    ) -> web.StreamResponse:
        rtype, ns = target.rtype, target.namespace
        if request.query.get("dryRun"):
            raise bad_request("dryRun is not supported by the Cadre local cluster")
        field_validation = request.query.get("fieldValidation", "Warn")
        if target.subresource == "log":
            return await self._log(request, target)
        if target.subresource == "proxy":
            return await self._proxy(request, target)
        if target.subresource == "scale":
            return _json(await self._scale(request, target, verb))
        if rtype.virtual:
            return _json(self._review(rtype, user, await self._read_body(request)), 201)
        if verb == "get":
            obj = self.cluster.get(rtype, ns, target.name)
            if _wants_table(request):
                return _json(
                    tables.table(
                        rtype,
                        [obj],
                        {"resourceVersion": obj["metadata"]["resourceVersion"]},
                        request.query.get("includeObject", "Metadata"),
                    )
                )
            return _json(obj)
        if verb in ("list", "watch"):
            matches = matcher(
                request.query.get("labelSelector", ""),
                request.query.get("fieldSelector", ""),
                rtype.kind,
                rtype.custom,
            )
            scope = ns if rtype.namespaced and ns else None
            if verb == "watch":
                return await self._watch(request, rtype, scope, matches, labels)
            listed = self.cluster.list(
                rtype, scope, matches, _int_param(request, "limit") or 0,
                request.query.get("continue", ""), request.query.get("resourceVersion", ""),
                request.query.get("resourceVersionMatch", ""),
            )  # fmt: skip
            if _wants_table(request):
                return _json(
                    tables.table(
                        rtype,
                        listed["items"],
                        listed["metadata"],
                        request.query.get("includeObject", "Metadata"),
                    )
                )
            return _json(listed)
        body = await self._read_body(request)
        if verb == "create":
            if target.subresource == "token":
                return _json(self._token(ns, target.name, body), 201)
            if target.subresource == "binding":
                return _json(self.cluster.bind(ns, target.name, body), 201)
            if target.name:
                raise method_not_allowed()
            result = self.cluster.create(rtype, ns, body, field_validation)
            return _json(result.obj, 201, result.warnings)
        if verb == "update":
            result = self.cluster.update(
                rtype, ns, target.name, body, target.subresource, field_validation
            )
            return _json(result.obj, 200, result.warnings)
        if verb == "patch":
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            result = self.cluster.patch(
                rtype, ns, target.name, content_type, body, target.subresource, field_validation
            )
            return _json(result.obj, 200, result.warnings)
        options = dict(body) if isinstance(body, dict) else {}
        for key in ("propagationPolicy", "gracePeriodSeconds", "orphanDependents"):
            if key in request.query:
                value: Any = request.query[key]
                if key == "gracePeriodSeconds":
                    value = _int_param(request, key)
                elif key == "orphanDependents":
                    value = value.lower() in _TRUE
                options[key] = value
        if verb == "delete":
            obj, finished = self.cluster.delete(rtype, ns, target.name, options)
            return _json(obj, 200 if finished else 202)
        matches = matcher(
            request.query.get("labelSelector", ""),
            request.query.get("fieldSelector", ""),
            rtype.kind,
            rtype.custom,
        )
        return _json(
            self.cluster.delete_collection(
                rtype, ns if rtype.namespaced and ns else None, matches, options
            )
        )

    # -----------------------------------------------------------------------------------------
    # Watch

    def _watch_event(
        self, rtype: ResourceType, change: Change, namespace: str | None, matches: Any
    ) -> tuple[str, Obj] | None:
        obj = change.obj
        if namespace is not None and obj["metadata"].get("namespace") != namespace:
            return None
        if change.type == "DELETED":
            return ("DELETED", obj) if matches(obj) else None
        now_matches = matches(obj)
        before = change.old is not None and matches(change.old)
        if change.type == "ADDED" or (now_matches and not before):
            return ("ADDED", obj) if now_matches else None
        if now_matches:
            return ("MODIFIED", obj)
        return ("DELETED", obj) if before else None

    async def _watch(
        self,
        request: web.Request,
        rtype: ResourceType,
        namespace: str | None,
        matches: Any,
        labels: dict[str, str],
    ) -> web.StreamResponse:
        rv = request.query.get("resourceVersion", "")
        bookmarks = request.query.get("allowWatchBookmarks", "").lower() in _TRUE
        initial_events = request.query.get("sendInitialEvents", "").lower() in _TRUE
        timeout = _int_param(request, "timeoutSeconds") or 1800
        as_table = _wants_table(request)
        include = request.query.get("includeObject", "Metadata")
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"}
        )
        subscription = self.store.subscribe(rtype.group_resource)
        task = asyncio.current_task()
        if task is not None:
            self._watches.add(task)
        first = [True]

        def encode(event_type: str, obj: Obj) -> bytes:
            shown = self.cluster.present(rtype, obj)
            if as_table and event_type not in ("ERROR", "BOOKMARK"):
                shown = tables.table(
                    rtype,
                    [shown],
                    {"resourceVersion": shown["metadata"]["resourceVersion"]},
                    include,
                )
                if not first[0]:
                    shown["columnDefinitions"] = []
                first[0] = False
            return (json.dumps({"type": event_type, "object": shown}) + "\n").encode()

        def bookmark(extra: Obj | None = None) -> bytes:
            meta: Obj = {"resourceVersion": str(self.store.revision)}
            if extra:
                meta["annotations"] = extra
            return (
                json.dumps(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "kind": rtype.kind,
                            "apiVersion": rtype.api_version,
                            "metadata": meta,
                        },
                    }
                )
                + "\n"
            ).encode()

        try:
            await response.prepare(request)
            # A watch is counted when it starts: it may stay open for the server's lifetime.
            self._requests.labels(**labels, code="200").inc()
            labels["counted"] = "yes"
            last = self.store.revision
            if rv in ("", "0") or initial_events:
                for obj in self.store.items(rtype.group_resource, namespace):
                    if matches(obj):
                        await response.write(encode("ADDED", obj))
                if initial_events and bookmarks:
                    await response.write(bookmark({"k8s.io/initial-events-end": "true"}))
            else:
                try:
                    backlog = self.store.changes_since(rtype.group_resource, int(rv))
                except (TooOldError, ValueError):
                    error = gone(f"too old resource version: {rv} ({self.store.compacted + 1})")
                    await response.write(
                        (json.dumps({"type": "ERROR", "object": error.status()}) + "\n").encode()
                    )
                    return response
                last = int(rv)
                for change in backlog:
                    event = self._watch_event(rtype, change, namespace, matches)
                    if event is not None:
                        await response.write(encode(*event))
                    last = change.rv
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + self.bookmark_interval
            while True:
                now = time.monotonic()
                if now >= deadline:
                    if bookmarks:
                        await response.write(bookmark())
                    break
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                try:
                    change = await asyncio.wait_for(subscription.queue.get(), timeout=max(wait, 0))
                except TimeoutError:
                    if bookmarks and time.monotonic() >= next_bookmark:
                        await response.write(bookmark())
                        next_bookmark = time.monotonic() + self.bookmark_interval
                    continue
                if change.rv <= last:
                    continue
                last = change.rv
                event = self._watch_event(rtype, change, namespace, matches)
                if event is not None:
                    await response.write(encode(*event))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unsubscribe(subscription)
            if task is not None:
                self._watches.discard(task)
        return response

    # -----------------------------------------------------------------------------------------
    # Subresources served here: log, proxy, token, reviews

    async def _log(self, request: web.Request, target: Target) -> web.StreamResponse:
        pod = self.cluster.get(target.rtype, target.namespace, target.name)
        containers = [c["name"] for c in pod["spec"].get("containers", [])]
        container = request.query.get("container", "")
        if not container:
            if len(containers) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {target.name}, choose one of:"
                    f" [{' '.join(containers)}]"
                )
            container = containers[0]
        elif container not in containers + [
            c["name"] for c in pod["spec"].get("initContainers", [])
        ]:
            raise bad_request(f"container {container} is not valid for pod {target.name}")
        if not pod["spec"].get("nodeName"):
            raise bad_request(f"pod {target.name} does not have a host assigned")
        if self.log_source is None:
            raise ApiError(
                503, "ServiceUnavailable", f"no kubelet serves node {pod['spec']['nodeName']}"
            )
        follow = request.query.get("follow", "").lower() in _TRUE
        timestamps = request.query.get("timestamps", "").lower() in _TRUE
        previous = request.query.get("previous", "").lower() in _TRUE
        chunks = self.log_source.stream(
            pod, container, follow, _int_param(request, "tailLines"), timestamps, previous
        )
        # The first chunk is read before the headers go out, so errors (no previous
        # container) are still a proper Status.
        first = await anext(chunks, b"")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        return response

    async def _proxy(self, request: web.Request, target: Target) -> web.StreamResponse:
        name, _, port = target.name.partition(":")
        pod = self.cluster.get(target.rtype, target.namespace, name)
        address = pod.get("status", {}).get("podIP")
        if not address:
            raise bad_request(f"address not allowed: pod {name} has no IP")
        url = f"http://{address}:{port or 80}/{target.rest}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _PROXY_HOP_HEADERS}
        # Streamed both ways, as the API server's proxy does: a follow (logs, events) stays
        # open as long as the pod keeps writing.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        response: web.StreamResponse | None = None
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session,
                session.request(
                    request.method,
                    url,
                    params=request.query,
                    headers=headers,
                    data=await request.read(),
                    allow_redirects=False,
                ) as upstream,
            ):
                kept = {
                    k: v
                    for k, v in upstream.headers.items()
                    if k.lower() not in _PROXY_HOP_HEADERS | {"content-length"}
                }
                response = web.StreamResponse(status=upstream.status, headers=kept)
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientError as err:
            if response is not None and response.prepared:
                return response  # the pod went away mid-stream: the stream just ends
            raise ApiError(
                503, "ServiceUnavailable", f"error trying to reach service: {err}"
            ) from err

    async def _scale(self, request: web.Request, target: Target, verb: str) -> Obj:
        """``scale``: an autoscaling/v1 Scale view of a workload's replicas."""
        rtype, ns, name = target.rtype, target.namespace, target.name
        if verb in ("patch", "update"):
            body = await self._read_body(request)
            current = self._scale_view(self.cluster.get(rtype, ns, name))
            content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
            if verb == "patch" and content_type == patches.JSON_PATCH:
                wanted = patches.json_patch(current, body)
            elif verb == "patch":
                wanted = patches.merge_patch(current, body)
            else:
                wanted = body
            replicas = (wanted or {}).get("spec", {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise bad_request("spec.replicas: Invalid value: must be a non-negative integer")
            self.cluster.patch(rtype, ns, name, patches.MERGE, {"spec": {"replicas": replicas}})
        return self._scale_view(self.cluster.get(rtype, ns, name))

    @staticmethod
    def _scale_view(obj: Obj) -> Obj:
        selector = obj["spec"].get("selector", {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: obj["metadata"][k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {
                "replicas": obj.get("status", {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in selector.items()),
            },
        }

    def _token(self, namespace: str, name: str, body: Any) -> Obj:
        accounts = self.registry.lookup("", "v1", "serviceaccounts")
        assert accounts is not None
        account = self.cluster.get(accounts, namespace, name)
        spec = (body or {}).get("spec", {}) if isinstance(body, dict) else {}
        expiration = int(spec.get("expirationSeconds") or 3600)
        if expiration < 600:
            raise ApiError(
                422,
                "Invalid",
                "spec.expirationSeconds: Invalid value: may not specify a duration less than 10"
                " minutes",
            )
        bound = spec.get("boundObjectRef")
        pod = None
        if bound:
            if bound.get("kind") != "Pod":
                raise bad_request(
                    f"cannot bind token to object of kind {bound.get('kind')}; only Pod is"
                    " supported here"
                )
            pods = self.registry.lookup("", "v1", "pods")
            assert pods is not None
            pod = self.cluster.get(pods, namespace, bound.get("name", ""))
            if bound.get("uid") and bound["uid"] != pod["metadata"]["uid"]:
                raise ApiError(
                    409,
                    "Conflict",
                    f"the UID in the bound object reference ({bound['uid']}) does not match the UID"
                    " in record. The object might have been deleted and then recreated",
                )
        token, expires = self.authenticator.issue(account, expiration, pod)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
            "spec": {
                "audiences": spec.get("audiences")
                or ["https://kubernetes.default.svc.cluster.local"],
                "expirationSeconds": expiration,
                "boundObjectRef": bound,
            },
            "status": {"token": token, "expirationTimestamp": stamp},
        }

    def _review(self, rtype: ResourceType, user: User, body: Any) -> Obj:
        if not isinstance(body, dict) or body.get("kind") != rtype.kind:
            raise bad_request(f"expected a {rtype.kind}")
        if rtype.kind == "SelfSubjectReview":
            return {**body, "status": {"userInfo": user.to_user_info()}}
        spec = body.get("spec", {})
        resource = spec.get("resourceAttributes")
        if resource is not None:
            attrs = Attributes(
                resource.get("verb", ""), resource.get("group", ""), resource.get("resource", ""),
                resource.get("subresource", ""), resource.get("namespace", ""),
                resource.get("name", ""),
            )  # fmt: skip
        else:
            non_resource = spec.get("nonResourceAttributes") or {}
            attrs = Attributes(non_resource.get("verb", ""), path=non_resource.get("path", ""))
        allowed = self.authorizer.allowed(user, attrs)
        status: Obj = {"allowed": allowed}
        if allowed and not user.is_admin:
            status["reason"] = "allowed by RBAC"
        return {**body, "status": status}
