"""The subresources the API server serves itself: a pod's ``log`` (from the kubelet) and
``proxy`` (to the pod's port), a workload's ``scale``, a service account's ``token``, and the
access reviews."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from cadre.api.types import Obj
from cadre.localcluster.apiserver import patches
from cadre.localcluster.apiserver.authn import Authenticator, User
from cadre.localcluster.apiserver.cluster import Cluster
from cadre.localcluster.apiserver.http import Target, content_type, flag, int_param, read_body
from cadre.localcluster.apiserver.rbac import Attributes, Authorizer
from cadre.localcluster.apiserver.registry import ResourceType
from cadre.localcluster.apiserver.status import ApiError, bad_request

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


async def serve_log(
    request: web.Request, cluster: Cluster, target: Target, source: LogSource | None
) -> web.StreamResponse:
    """``pods/log``: a container's output, from the kubelet that runs the pod."""
    pod = cluster.get(target.rtype, target.namespace, target.name)
    containers = [c["name"] for c in pod["spec"].get("containers", [])]
    container = request.query.get("container", "")
    if not container:
        if len(containers) != 1:
            raise bad_request(
                f"a container name must be specified for pod {target.name}, choose one of:"
                f" [{' '.join(containers)}]"
            )
        container = containers[0]
    elif container not in containers + [c["name"] for c in pod["spec"].get("initContainers", [])]:
        raise bad_request(f"container {container} is not valid for pod {target.name}")
    if not pod["spec"].get("nodeName"):
        raise bad_request(f"pod {target.name} does not have a host assigned")
    if source is None:
        raise ApiError(
            503, "ServiceUnavailable", f"no kubelet serves node {pod['spec']['nodeName']}"
        )
    follow = flag(request, "follow")
    timestamps = flag(request, "timestamps")
    previous = flag(request, "previous")
    chunks = source.stream(
        pod, container, follow, int_param(request, "tailLines"), timestamps, previous
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


async def serve_proxy(request: web.Request, cluster: Cluster, target: Target) -> web.StreamResponse:
    """``pods/proxy``: the request passed on to the pod's port, the answer streamed back."""
    name, _, port = target.name.partition(":")
    pod = cluster.get(target.rtype, target.namespace, name)
    address = pod.get("status", {}).get("podIP")
    if not address:
        raise bad_request(f"address not allowed: pod {name} has no IP")
    url = f"http://{address}:{port or 80}/{target.rest}"
    # The caller's credentials and impersonation stop here, as in kube-apiserver.
    headers = {
        k: v
        for k, v in request.headers.items()
        if k.lower() not in _PROXY_HOP_HEADERS and not k.lower().startswith("impersonate-")
    }
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
        raise ApiError(503, "ServiceUnavailable", f"error trying to reach service: {err}") from err


async def serve_scale(request: web.Request, cluster: Cluster, target: Target, verb: str) -> Obj:
    """``scale``: an autoscaling/v1 Scale view of a workload's replicas."""
    rtype, ns, name = target.rtype, target.namespace, target.name
    if verb in ("patch", "update"):
        body = await read_body(request)
        current = scale_view(cluster.get(rtype, ns, name))
        if verb == "patch" and content_type(request) == patches.JSON_PATCH:
            wanted = patches.json_patch(current, body)
        elif verb == "patch":
            wanted = patches.merge_patch(current, body)
        else:
            wanted = body
        replicas = (wanted or {}).get("spec", {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise bad_request("spec.replicas: Invalid value: must be a non-negative integer")
        cluster.patch(rtype, ns, name, patches.MERGE, {"spec": {"replicas": replicas}})
    return scale_view(cluster.get(rtype, ns, name))


def scale_view(obj: Obj) -> Obj:
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


def request_token(
    cluster: Cluster, authenticator: Authenticator, namespace: str, name: str, body: Any
) -> Obj:
    """``serviceaccounts/token``: a TokenRequest answered with a token, bound to a pod if asked."""
    accounts = cluster.registry.lookup("", "v1", "serviceaccounts")
    assert accounts is not None
    account = cluster.get(accounts, namespace, name)
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
        pods = cluster.registry.lookup("", "v1", "pods")
        assert pods is not None
        pod = cluster.get(pods, namespace, bound.get("name", ""))
        if bound.get("uid") and bound["uid"] != pod["metadata"]["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f"the UID in the bound object reference ({bound['uid']}) does not match the UID"
                " in record. The object might have been deleted and then recreated",
            )
    token, expires = authenticator.issue(account, expiration, pod)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires))
    return {
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
        "spec": {
            "audiences": spec.get("audiences") or ["https://kubernetes.default.svc.cluster.local"],
            "expirationSeconds": expiration,
            "boundObjectRef": bound,
        },
        "status": {"token": token, "expirationTimestamp": stamp},
    }


def review(authorizer: Authorizer, rtype: ResourceType, user: User, body: Any) -> Obj:
    """SelfSubjectReview and the access reviews: who the caller is, and what it may do."""
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
    allowed = authorizer.allowed(user, attrs)
    status: Obj = {"allowed": allowed}
    if allowed and not user.is_admin:
        status["reason"] = "allowed by RBAC"
    return {**body, "status": status}
