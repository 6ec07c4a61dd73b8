"""kopf's HTTP connections to the API server, bounded.

kopf's own client (aiohttp, HTTP/1.1) opens a connection for every request in flight and sets
no limit: 1,000 Tasks created at once had it patching 1,000 of them at the same moment over
2,000 TLS connections, each with a 256 KiB TLS buffer (over 250 MB of the operator's memory,
and as many connections for the API server to serve). This login handler logs in as kopf's
default one does (in-cluster, else the kubeconfig) and hands kopf a session whose connections
are bounded: every watch stream keeps one, and REQUEST_CONNECTIONS more carry the patches,
Events and reads, which beyond that wait their turn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aiohttp
import kopf

from cadre.operator.state import state_of

WATCHED_RESOURCES = frozenset(
    {
        "tasks.cadre.dev",
        "agents.cadre.dev",
        "teams.cadre.dev",
        "policies.cadre.dev",
        "pods",
        "configmaps",
    }
)
"""What the handlers watch (a test checks it against kopf's registry): one stream each, per
namespace served."""
KOPF_STREAMS = 2
"""kopf's own watches, cluster-wide: CustomResourceDefinitions and Namespaces."""
REQUEST_CONNECTIONS = 32
"""Connections for requests other than watches."""


def connection_limit(namespaces: int) -> int:
    """Every watch stream's connection, and REQUEST_CONNECTIONS for the rest (pure)."""
    return len(WATCHED_RESOURCES) * max(namespaces, 1) + KOPF_STREAMS + REQUEST_CONNECTIONS


def build_session(
    info: kopf.ConnectionInfo, limit: int, trace_configs: Sequence[aiohttp.TraceConfig] = ()
) -> aiohttp.ClientSession:
    """What kopf's own session is (TLS, credentials, proxy), with at most ``limit``
    connections (call inside the event loop that uses it)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
        trace_configs=list(trace_configs),
    )


@kopf.on.login(id="login")
async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.AiohttpSession | None:
    info = kopf.login_via_client(**kwargs)  # what kopf itself would use
    if info is None:
        return None
    # How many namespaces are watched one by one (0: the whole cluster, a stream per resource).
    namespaces = state_of(memo).namespaces
    return kopf.AiohttpSession(
        aiohttp_session=build_session(info, connection_limit(namespaces)),
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )
