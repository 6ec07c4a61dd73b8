"""The local cluster's API server over HTTPS (aiohttp): authentication, RBAC, discovery,
OpenAPI and the REST verbs; watches (``watch``) and subresources (``subresources``) are served
by modules of their own, request parsing is in ``http``.

The object semantics live in ``cluster``; this module only maps HTTP onto them, the way
kube-apiserver's handler chain does (authenticate, drop the Authorization header, authorize,
count, serve).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, generate_latest

from cadre.localcluster.apiserver import discovery, http, patches, subresources, tables
from cadre.localcluster.apiserver.authn import Authenticator, User
from cadre.localcluster.apiserver.cluster import Cluster
from cadre.localcluster.apiserver.faults import Faults
from cadre.localcluster.apiserver.impersonation import impersonated
from cadre.localcluster.apiserver.kubeconfig import build_kubeconfig, render_kubeconfig
from cadre.localcluster.apiserver.rbac import (
    Attributes,
    Authorizer,
    bootstrap_policy,
    forbidden_message,
)
from cadre.localcluster.apiserver.registry import Registry, ResourceType
from cadre.localcluster.apiserver.selectors import matcher
from cadre.localcluster.apiserver.status import (
    ApiError,
    bad_request,
    forbidden,
    method_not_allowed,
    path_not_found,
    unauthorized,
)
from cadre.localcluster.apiserver.store import Store
from cadre.localcluster.apiserver.tls import Certificates, issue
from cadre.localcluster.apiserver.watch import serve_watch

log = logging.getLogger(__name__)
_SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class ApiServer:
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
        alt_names: tuple[str, ...] = (),
    ) -> None:
        self.host = host
        self.alt_names = alt_names
        """More names its certificate carries (the address pods reach it at)."""
        self.port = port
        self.store = Store(history)
        self.registry = Registry()
        self.cluster = Cluster(self.store, self.registry)
        self.authenticator = Authenticator(self.store, admin_token)
        self.authorizer = Authorizer(self.store)
        self.faults = Faults()
        """Errors tests ask for (``faults.inject``); none by default."""
        self.bookmark_interval = bookmark_interval
        self.log_source: subresources.LogSource | None = None
        self._crd_dir = crd_dir
        self._certs: Certificates | None = None
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
        self._certs = issue([self.host, "localhost", *self.alt_names])
        self._bootstrap()
        app = web.Application(client_max_size=http.MAX_BODY)
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
            "client": http.client_of(request.headers.get("User-Agent", "")),
        }
        code = 500
        try:
            user = self.authenticator.authenticate(request.headers.get("Authorization"))
            if user is None:
                raise unauthorized()
            user = impersonated(request.headers.items(), user, self.authorizer.allowed)
            response = await self._serve(request, user, labels)
            code = response.status
            return response
        except ApiError as err:
            code = err.code
            response = http.json_response(err.status(), err.code)
            retry = (err.details or {}).get("retryAfterSeconds")
            if retry is not None:
                response.headers["Retry-After"] = str(retry)
            return response
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.path)
            code = 500
            return http.json_response(
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
        group, version, rest = http.group_version(parts)
        if version is None:
            self._authorize(user, Attributes("get", path=request.path))
            return self._discovery(parts, group)
        if not rest:
            self._authorize(user, Attributes("get", path=request.path))
            listing = discovery.api_resource_list(self.registry, group, version)
            if listing is None:
                raise path_not_found()
            return http.json_response(listing)
        target = self._target(group, version, rest)
        verb = http.verb(request, target)
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

    def _discovery(self, parts: list[str], group: str) -> web.Response:
        if parts == ["api"]:
            return http.json_response(discovery.api_versions(f"{self.host}:{self.port}"))
        if parts == ["apis"]:
            return http.json_response(discovery.api_group_list(self.registry))
        found = discovery.api_group(self.registry, group)
        if found is None:
            raise path_not_found()
        return http.json_response(found)

    def _target(self, group: str, version: str, rest: list[str]) -> http.Target:
        def lookup(plural: str) -> ResourceType:
            rtype = self.registry.lookup(group, version, plural)
            if rtype is None:
                raise path_not_found()
            return rtype

        if rest[0] == "namespaces" and len(rest) >= 3:
            candidate = self.registry.lookup(group, version, rest[2])
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
                return http.item(candidate, namespace, rest)
        rtype = lookup(rest[0])
        if rtype.namespaced and len(rest) > 1:
            raise path_not_found()
        return http.item(rtype, "", rest)

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
            return http.json_response(discovery.version_info())
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

    async def _resource(
        self,
        request: web.Request,
        user: User,
        target: http.Target,
        verb: str,
        labels: dict[str, str],
    ) -> web.StreamResponse:
        rtype, ns = target.rtype, target.namespace
        if request.query.get("dryRun"):
            raise bad_request("dryRun is not supported by the Cadre local cluster")
        field_validation = request.query.get("fieldValidation", "Warn")
        if target.subresource == "log":
            return await subresources.serve_log(request, self.cluster, target, self.log_source)
        if target.subresource == "proxy":
            return await subresources.serve_proxy(request, self.cluster, target)
        if target.subresource == "scale":
            return http.json_response(
                await subresources.serve_scale(request, self.cluster, target, verb)
            )
        if rtype.virtual:
            review = subresources.review(
                self.authorizer, rtype, user, await http.read_body(request)
            )
            return http.json_response(review, 201)
        if verb == "get":
            obj = self.cluster.get(rtype, ns, target.name)
            if http.wants_table(request):
                return http.json_response(
                    tables.table(
                        rtype,
                        [obj],
                        {"resourceVersion": obj["metadata"]["resourceVersion"]},
                        request.query.get("includeObject", "Metadata"),
                    )
                )
            return http.json_response(obj)
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
                rtype, scope, matches, http.int_param(request, "limit") or 0,
                request.query.get("continue", ""), request.query.get("resourceVersion", ""),
                request.query.get("resourceVersionMatch", ""),
            )  # fmt: skip
            if http.wants_table(request):
                return http.json_response(
                    tables.table(
                        rtype,
                        listed["items"],
                        listed["metadata"],
                        request.query.get("includeObject", "Metadata"),
                    )
                )
            return http.json_response(listed)
        body = await http.read_body(request)
        manager = http.field_manager(request)
        if verb == "create":
            if target.subresource == "token":
                token = subresources.request_token(
                    self.cluster, self.authenticator, ns, target.name, body
                )
                return http.json_response(token, 201)
            if target.subresource == "binding":
                return http.json_response(self.cluster.bind(ns, target.name, body), 201)
            if target.name:
                raise method_not_allowed()
            result = self.cluster.create(rtype, ns, body, field_validation, user, manager)
            return http.json_response(result.obj, 201, result.warnings)
        if verb == "update":
            result = self.cluster.update(
                rtype, ns, target.name, body, target.subresource, field_validation, user, manager
            )
            return http.json_response(result.obj, 200, result.warnings)
        if verb == "patch":
            result = self.cluster.patch(
                rtype,
                ns,
                target.name,
                http.content_type(request),
                body,
                target.subresource,
                field_validation,
                user,
                # An apply names its manager; other writes may take it from the User-Agent.
                request.query.get("fieldManager", "")
                if http.content_type(request) == patches.APPLY
                else manager,
                http.flag(request, "force"),
            )
            return http.json_response(result.obj, 201 if result.created else 200, result.warnings)
        options = dict(body) if isinstance(body, dict) else {}
        for key in ("propagationPolicy", "gracePeriodSeconds", "orphanDependents"):
            if key in request.query:
                value: Any = request.query[key]
                if key == "gracePeriodSeconds":
                    value = http.int_param(request, key)
                elif key == "orphanDependents":
                    value = value.lower() in http.TRUE
                options[key] = value
        if verb == "delete":
            obj, finished = self.cluster.delete(rtype, ns, target.name, options, user)
            return http.json_response(obj, 200 if finished else 202)
        matches = matcher(
            request.query.get("labelSelector", ""),
            request.query.get("fieldSelector", ""),
            rtype.kind,
            rtype.custom,
        )
        return http.json_response(
            self.cluster.delete_collection(
                rtype, ns if rtype.namespaced and ns else None, matches, options, user
            )
        )

    async def _watch(
        self,
        request: web.Request,
        rtype: ResourceType,
        namespace: str | None,
        matches: Any,
        labels: dict[str, str],
    ) -> web.StreamResponse:
        def started() -> None:
            self._requests.labels(**labels, code="200").inc()
            labels["counted"] = "yes"

        task = asyncio.current_task()
        if task is not None:
            self._watches.add(task)  # cancelled at stop()
        try:
            return await serve_watch(
                request, self.cluster, rtype, namespace, matches, self.bookmark_interval, started
            )
        finally:
            if task is not None:
                self._watches.discard(task)
