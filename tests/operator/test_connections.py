"""kopf's connections to the API server are bounded (``cadre.operator.connections``): a burst
of requests queues for connections instead of opening one each. Against the local API
server over TLS, with the credentials kopf's own login finds in the kubeconfig."""

from __future__ import annotations

import asyncio
import importlib
import logging
from pathlib import Path
from typing import Any

import aiohttp
import kopf
import kubernetes
import pytest
from cadre.operator import connections
from cadre.operator.settings import from_env
from cadre.operator.state import OperatorState, memo_for

from tests.localcluster.conftest import Served
from tests.operator.conftest import NS

# Importing them registers every handler the operator runs with kopf's default registry.
importlib.import_module("cadre.operator.handlers")
importlib.import_module("cadre.operator.sandbox_handlers")
importlib.import_module("cadre.operator.stragglers")
importlib.import_module("cadre.operator.team_handlers")
LOG = logging.getLogger(__name__)


def test_the_watched_resources_are_those_the_handlers_watch() -> None:
    registry = kopf.get_default_registry()
    handlers = [
        handler
        for kind in (registry._indexing, registry._watching, registry._spawning, registry._changing)
        for handler in kind.get_all_handlers()
    ]
    watched = {
        f"{h.selector.any_name}.{h.selector.group}" if h.selector.group else h.selector.any_name
        for h in handlers
    }
    assert watched == connections.WATCHED_RESOURCES


def test_the_limit_leaves_room_for_every_watch_stream_of_every_namespace() -> None:
    one = connections.connection_limit(1)
    assert one == 6 + connections.KOPF_STREAMS + connections.REQUEST_CONNECTIONS
    assert connections.connection_limit(0) == one  # the whole cluster: one stream a resource
    assert connections.connection_limit(20) - one == 19 * 6


@pytest.fixture
def kubeconfig_login(cluster: Served, monkeypatch: pytest.MonkeyPatch) -> Path:
    """kopf's login reads the kubeconfig (its path taken from $KUBECONFIG when the client was
    imported) into the client's process-wide default configuration: restored after the test."""
    kubeconfig = cluster.kubeconfig
    monkeypatch.setattr(
        kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig)
    )
    monkeypatch.setattr(kubernetes.client.Configuration, "_default", None)
    return kubeconfig


async def test_a_burst_of_requests_shares_the_bounded_connections(kubeconfig_login: Path) -> None:
    info = kopf.login_via_client(logger=LOG, settings=kopf.OperatorSettings())
    assert info is not None
    opened = 0

    async def count(*_: Any) -> None:
        nonlocal opened
        opened += 1

    tracing = aiohttp.TraceConfig()
    tracing.on_connection_create_end.append(count)
    limit = 4
    async with connections.build_session(info, limit, [tracing]) as session:

        async def read() -> int:
            url = f"{info.server}/api/v1/namespaces/{NS}/configmaps"
            async with session.get(url) as response:
                await response.read()
                return response.status

        statuses = await asyncio.gather(*(read() for _ in range(40)))
    assert statuses == [200] * 40  # TLS and the token as kopf's own session has them
    assert 1 <= opened <= limit, f"{opened} connections for 40 requests at once"


async def test_the_login_handler_hands_kopf_a_bounded_session(kubeconfig_login: Path) -> None:
    context = await connections.login(
        logger=LOG,
        settings=kopf.OperatorSettings(),
        memo=memo_for(OperatorState(from_env({}), namespaces=3)),
    )
    assert isinstance(context, kopf.AiohttpSession)
    async with context.aiohttp_session as session:
        assert session.connector is not None
        assert session.connector.limit == connections.connection_limit(3)
        assert session.headers["Authorization"].startswith("Bearer ")
        assert context.server.startswith("https://")
