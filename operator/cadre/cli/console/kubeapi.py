"""The console's asynchronous client of the Kubernetes API, on aiohttp: lists, watches, reads,
merge patches and streamed pod-proxy reads, with the credentials of a kubeconfig (the user's
own: ``cadre console``) or of the pod's ServiceAccount (the chart's Deployment).

The ``kubernetes`` client only loads the credentials (exec plugins, client certificates, token
files); requests go through aiohttp so that a watch or a followed transcript is a coroutine
that is cancelled when the browser goes away, rather than a blocked thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes

from cadre.api.types import Obj

MAX_LINE_BYTES = 8 * 1024 * 1024
CLOSING_TURNS = 3


class KubeApiError(Exception):
    """The API server (or a pod behind its proxy) refused; ``message`` is its own words."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def load_configuration(kubeconfig: Path | None, context: str | None) -> Any:
    """The client configuration: a kubeconfig as kubectl finds it, or in a pod with no
    kubeconfig, the pod's ServiceAccount."""
    configuration = kubernetes.client.Configuration()
    in_pod = "KUBERNETES_SERVICE_HOST" in os.environ
    default = Path(os.environ.get("KUBECONFIG") or Path.home() / ".kube" / "config")
    if kubeconfig is None and in_pod and not default.exists():
        kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            str(kubeconfig) if kubeconfig else None, context=context,
            client_configuration=configuration,
        )  # fmt: skip
    return configuration


def _tls(configuration: Any) -> ssl.SSLContext | bool:
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


async def _refusal(response: aiohttp.ClientResponse) -> KubeApiError:
    text = (await response.text()).strip()
    with contextlib.suppress(ValueError, KeyError, TypeError):
        text = str(json.loads(text)["message"])
    return KubeApiError(response.status, text)


class KubeApi:
    """One aiohttp session to one API server; ``close()`` when done."""

    def __init__(self, configuration: Any) -> None:
        self.configuration = configuration
        self.host = str(configuration.host).rstrip("/")
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=_tls(configuration), limit=64),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )

    async def close(self) -> None:
        # Pooled TLS connections are dropped, not said goodbye to: a graceful TLS shutdown
        # needs round trips a stopping loop (a busy machine) may not give it.
        connector = self.session.connector
        if connector is not None:
            await connector.close(abort_ssl=True)
        await self.session.close()
        # A stream left mid-way aborted its connection itself, not through the pool: the
        # socket is closed on the loop's next turns.
        for _ in range(CLOSING_TURNS):
            await asyncio.sleep(0)

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        # Asked every time: an in-cluster token file is re-read as the kubelet rotates it.
        token = self.configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = token
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def _json(self, method: str, path: str, *, body: Obj | None = None,
                    content_type: str | None = None, query: dict[str, str] | None = None,
                    ) -> Obj:  # fmt: skip
        async with self.session.request(
            method, self.host + path, params=query or {},
            data=json.dumps(body) if body is not None else None,
            headers=self._headers(content_type), timeout=aiohttp.ClientTimeout(total=30),
        ) as response:  # fmt: skip
            if response.status >= 400:
                raise await _refusal(response)
            found: Obj = await response.json()
            return found

    async def get(self, path: str, **query: str) -> Obj:
        return await self._json("GET", path, query=query)

    async def merge_patch(self, path: str, body: Obj) -> Obj:
        return await self._json("PATCH", path, body=body,
                                content_type="application/merge-patch+json")  # fmt: skip

    async def lines(self, path: str, **query: str) -> AsyncGenerator[bytes, None]:
        """The lines of a streamed answer (a watch, a pod's events through the pod proxy), as
        they come; the request ends when the caller stops iterating."""
        async with self.session.get(
            self.host + path, params=query, headers=self._headers(),
        ) as response:  # fmt: skip
            if response.status >= 400:
                raise await _refusal(response)
            try:
                while not response.content.at_eof():
                    # A Task's status may carry delivered files: far longer lines than
                    # aiohttp's default line limit (64 KiB); an object is at most 1.5 MiB.
                    line = await response.content.readuntil(b"\n", max_size=MAX_LINE_BYTES)
                    if line.strip():
                        yield line
            finally:
                if not response.content.at_eof() and response.connection is not None:
                    # Left mid-stream (cancelled, the browser gone): drop the connection at
                    # once rather than wait for a TLS goodbye the loop may not live to see.
                    transport = response.connection.transport
                    if transport is not None:
                        transport.abort()
