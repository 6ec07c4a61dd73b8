"""The harness's egress proxy over real sockets: real HTTPS servers (their own CA, made with
trustme) stand for a package index and a git host, reached under their names (the proxy's
resolver points ``*.test`` at loopback); clients are urllib and curl through the proxy, trusting
the Agent's egress CA made by the operator's code."""

from __future__ import annotations

import asyncio
import http.client
import shutil
import socket
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from cadre.api.egress import parse_rule
from cadre.harness.egress_proxy import Credential, EgressProxy, EgressRecord
from cadre.harness.egress_tls import Authority, BioTLS, server_name
from cadre.operator.egress_ca import new_authority

TOKEN = "ghp-test-token-never-in-the-sandbox"
BIG = bytes(range(256)) * (3 * 4096 + 7)


@dataclass
class Upstream:
    port: int
    ca_pem: bytes
    seen: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    """One HTTPS server answering for pypi.test and git.test; it records what it was sent."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("pypi.test", "git.test").configure_cert(context)
    served = Upstream(0, ca.cert_pem.bytes())

    async def anything(request: web.Request) -> web.StreamResponse:
        if request.path == "/ws":
            return await _echo_websocket(request, served)
        body = await request.read()
        if request.path == "/big":  # over the proxy's raw-copy threshold
            return web.Response(body=BIG)
        served.seen.append({"host": request.host, "path": request.path,
                            "authorization": request.headers.get("Authorization"),
                            "body": len(body)})  # fmt: skip
        return web.Response(text=f"hello from {request.host}{request.path}\n")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    served.port = runner.addresses[0][1]
    yield served
    await runner.cleanup()


async def _echo_websocket(request: web.Request, served: Upstream) -> web.WebSocketResponse:
    """Says hello first (data right behind the 101), then echoes until the client closes."""
    authorization = request.headers.get("Authorization")
    served.seen.append({"host": request.host, "path": request.path,
                        "authorization": authorization, "body": 0})  # fmt: skip
    socket_ = web.WebSocketResponse()
    await socket_.prepare(request)
    await socket_.send_str("hello")
    async for message in socket_:
        if message.type == web.WSMsgType.TEXT:
            await socket_.send_str(f"echo: {message.data}")
        elif message.type == web.WSMsgType.BINARY:
            await socket_.send_bytes(message.data[::-1])
    return socket_


@dataclass
class Running:
    port: int
    records: list[EgressRecord]
    bundle: Path
    """The Agent's egress CA and the upstream's CA: what a sandbox trusts."""


@pytest.fixture
async def proxy(upstream: Upstream, tmp_path: Path) -> AsyncIterator[Running]:
    cert_pem, key_pem = new_authority("engineer", "default")
    upstream_tls = ssl.create_default_context(cadata=upstream.ca_pem.decode())
    hosts = [f"pypi.test:{upstream.port}", f"git.test:{upstream.port}"]
    credentials = [Credential(parse_rule(hosts[1]), "Bearer", TOKEN)]
    records: list[EgressRecord] = []
    authority = Authority(cert_pem.encode(), key_pem.encode())
    server = EgressProxy(hosts, credentials, authority, records.append, upstream_tls,
                         resolve=lambda h: "127.0.0.1" if h.endswith(".test") else h)  # fmt: skip
    port = await server.start("127.0.0.1", 0)
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(cert_pem.encode() + upstream.ca_pem)
    yield Running(port, records, bundle)
    await server.close()


def _get(url: str, proxy_port: int, bundle: Path) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(bundle))
    proxies = {"http": f"http://127.0.0.1:{proxy_port}", "https": f"http://127.0.0.1:{proxy_port}"}
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler(proxies), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(url, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except urllib.error.URLError as err:
        return 0, str(err.reason)


def _through(proxy: Running, host: str, **options: Any) -> ssl.SSLSocket:
    """A CONNECT to ``host`` through the proxy, then TLS trusting what a sandbox trusts."""
    raw = socket.create_connection(("127.0.0.1", proxy.port), timeout=20)
    raw.sendall(f"CONNECT {host} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert raw.recv(1024).startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cafile=str(proxy.bundle))
    return context.wrap_socket(raw, server_hostname=host.split(":")[0], **options)


async def _eventually_recorded(records: list[EgressRecord], count: int) -> None:
    for _ in range(200):
        if len(records) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"only {len(records)} connections recorded")


async def test_an_allowed_host_without_a_credential_is_tunnelled_untouched(
    upstream: Upstream, proxy: Running
) -> None:
    url = f"https://pypi.test:{upstream.port}/simple/"
    status, body = await asyncio.to_thread(_get, url, proxy.port, proxy.bundle)
    assert (status, body) == (200, f"hello from pypi.test:{upstream.port}/simple/\n")
    assert upstream.seen[-1]["authorization"] is None
    await _eventually_recorded(proxy.records, 1)
    record = proxy.records[-1]
    assert (record.host, record.decision, record.credential, record.intercepted) == (
        "pypi.test", "allowed", False, False)  # fmt: skip
    assert record.bytes_out > 0
    assert record.bytes_in > 0


async def test_a_host_with_a_credential_gets_it_and_the_sandbox_never_sends_it(
    upstream: Upstream, proxy: Running
) -> None:
    url = f"https://git.test:{upstream.port}/repo.git/info/refs"
    status, _ = await asyncio.to_thread(_get, url, proxy.port, proxy.bundle)
    assert status == 200
    assert upstream.seen[-1]["authorization"] == f"Bearer {TOKEN}"
    await _eventually_recorded(proxy.records, 1)
    record = proxy.records[-1]
    assert (record.host, record.credential, record.intercepted) == ("git.test", True, True)
    assert TOKEN not in str(record.event())  # accounted, never the value


async def test_a_large_download_with_a_credential_arrives_whole(
    upstream: Upstream, proxy: Running
) -> None:
    url = f"https://git.test:{upstream.port}/big"
    context = ssl.create_default_context(cafile=str(proxy.bundle))
    handler = urllib.request.ProxyHandler({"https": f"http://127.0.0.1:{proxy.port}"})
    opener = urllib.request.build_opener(handler, urllib.request.HTTPSHandler(context=context))

    def fetch() -> bytes:
        with opener.open(url, timeout=30) as response:
            data: bytes = response.read()
            return data

    assert await asyncio.to_thread(fetch) == BIG
    await _eventually_recorded(proxy.records, 1)
    assert proxy.records[-1].bytes_in > len(BIG)


async def test_an_intercepted_connection_carries_several_requests_and_ends_cleanly(
    upstream: Upstream, proxy: Running
) -> None:
    """Keep-alive through interception (each request gets the credential), then a large body,
    after which the proxy closes with TLS's close_notify: a client that refuses truncated TLS
    (``suppress_ragged_eofs=False``) still reads to a clean end."""
    host = f"git.test:{upstream.port}"

    def exchange() -> bytes:
        with _through(proxy, host, suppress_ragged_eofs=False) as tls:
            requests = (
                f"GET /one HTTP/1.1\r\nHost: {host}\r\n\r\n"
                f"POST /two HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello"
                f"GET /big HTTP/1.1\r\nHost: {host}\r\n\r\n"
            )
            tls.sendall(requests.encode())
            received = b""
            while chunk := tls.recv(65536):  # SSLEOFError here: no close_notify
                received += chunk
            return received

    received = await asyncio.to_thread(exchange)
    assert received.count(b"HTTP/1.1 200") == 3
    assert received.endswith(BIG)
    assert [(seen["path"], seen["authorization"], seen["body"]) for seen in upstream.seen] == [
        ("/one", f"Bearer {TOKEN}", 0), ("/two", f"Bearer {TOKEN}", 5)
    ]  # fmt: skip
    await _eventually_recorded(proxy.records, 1)
    assert len(proxy.records) == 1
    assert proxy.records[0].intercepted


async def test_a_websocket_to_a_host_with_a_credential_is_relayed_both_ways(
    upstream: Upstream, proxy: Running
) -> None:
    """The upgrade carries the credential; after the 101 the proxy relays frames raw both
    ways: the host's greeting sent right behind the 101, echoes, and a 3 MiB binary message
    (many TLS records, read while the other way is idle)."""
    context = ssl.create_default_context(cafile=str(proxy.bundle))
    url = f"wss://git.test:{upstream.port}/ws"
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, proxy=f"http://127.0.0.1:{proxy.port}", ssl=context) as ws,
    ):
        assert await ws.receive_str(timeout=20) == "hello"
        for word in ("one", "two"):
            await ws.send_str(word)
            assert await ws.receive_str(timeout=20) == f"echo: {word}"
        await ws.send_bytes(BIG)
        assert await ws.receive_bytes(timeout=20) == BIG[::-1]
    assert upstream.seen[-1] == {"host": f"git.test:{upstream.port}", "path": "/ws",
                                 "authorization": f"Bearer {TOKEN}", "body": 0}  # fmt: skip
    await _eventually_recorded(proxy.records, 1)
    record = proxy.records[-1]
    assert (record.host, record.intercepted, record.decision) == ("git.test", True, "allowed")
    assert record.bytes_out > len(BIG)
    assert record.bytes_in > len(BIG)


async def test_plain_http_to_several_hosts_on_one_proxy_connection_reaches_each(
    tmp_path: Path,
) -> None:
    """Clients keep one connection to the proxy for every http:// host (urllib3 does): each
    request goes to the host it names, checked on its own; a host not allowed is refused on
    that connection, and each host is a record of its own. A ws:// upgrade is relayed raw."""
    runners, ports = [], []
    for name in ("first", "second"):

        async def answer(request: web.Request, name: str = name) -> web.Response:
            extra = request.headers.get("Proxy-Connection", "")
            return web.Response(text=f"{name} server: {request.host}{request.path_qs}{extra}")

        async def websocket(request: web.Request) -> web.WebSocketResponse:
            return await _echo_websocket(request, Upstream(0, b""))

        app = web.Application()
        app.router.add_get("/ws", websocket)
        app.router.add_get("/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        ports.append(runner.addresses[0][1])
    records: list[EgressRecord] = []
    hosts = [f"pypi.test:{ports[0]}", f"git.test:{ports[1]}"]
    server = EgressProxy(hosts, [], None, records.append,
                         resolve=lambda h: "127.0.0.1" if h.endswith(".test") else h)  # fmt: skip
    port = await server.start("127.0.0.1", 0)

    def one_connection() -> list[tuple[int, str]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        answers = []
        try:
            for url in (f"http://{hosts[0]}/a?x=1", f"http://{hosts[1]}/b",
                        f"http://{hosts[0]}/c", "http://evil.test/d"):  # fmt: skip
                conn.request("GET", url, headers={"Proxy-Connection": "keep-alive"})
                response = conn.getresponse()
                answers.append((response.status, response.read().decode()))
        finally:
            conn.close()
        return answers

    try:
        answers = await asyncio.to_thread(one_connection)
        await _eventually_recorded(records, 4)
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"ws://{hosts[1]}/ws", proxy=f"http://127.0.0.1:{port}") as ws,
        ):
            assert await ws.receive_str(timeout=20) == "hello"
            await ws.send_str("plain")
            assert await ws.receive_str(timeout=20) == "echo: plain"
        await _eventually_recorded(records, 5)
        old_client = await asyncio.to_thread(
            _exchange, port, f"GET http://{hosts[0]}/old HTTP/1.0\r\n\r\n"
        )
        await _eventually_recorded(records, 6)
    finally:
        await server.close()
        for runner in runners:
            await runner.cleanup()
    assert answers[:3] == [(200, f"first server: {hosts[0]}/a?x=1"),
                           (200, f"second server: {hosts[1]}/b"),
                           (200, f"first server: {hosts[0]}/c")]  # fmt: skip
    assert answers[3][0] == 403
    assert "evil.test:80 is not one of this Agent's egress hosts" in answers[3][1]
    assert [(r.host, r.decision) for r in records] == [
        ("pypi.test", "allowed"), ("git.test", "allowed"), ("pypi.test", "allowed"),
        ("evil.test", "refused"), ("git.test", "allowed"), ("pypi.test", "allowed")]  # fmt: skip
    assert all(r.bytes_in > 0 for r in records[:3])
    # HTTP/1.0 sends no Host: the proxy names the host its URL gave.
    assert old_client.endswith(f"first server: {hosts[0]}/old".encode()), old_client


def _exchange(port: int, request: str) -> bytes:
    """``request`` sent raw to the proxy; all it answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as raw:
        raw.sendall(request.encode())
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
        return answer


async def test_a_client_expecting_100_continue_is_answered_at_once(
    upstream: Upstream, proxy: Running
) -> None:
    """``Expect: 100-continue`` (curl sends it for large uploads, then waits a second): the
    proxy answers 100 itself and the host receives the whole body with the credential."""
    host = f"git.test:{upstream.port}"

    def upload() -> bytes:
        with _through(proxy, host) as tls:
            tls.sendall(f"POST /push HTTP/1.1\r\nHost: {host}\r\nContent-Length: 7\r\n"
                        "Expect: 100-continue\r\n\r\n".encode())  # fmt: skip
            interim = tls.recv(1024)  # the body is sent only once this came (timeout: 20 s)
            tls.sendall(b"payload")
            answer = b""
            while b"hello from" not in answer and (chunk := tls.recv(65536)):
                answer += chunk
            return interim + answer

    received = await asyncio.to_thread(upload)
    assert received.startswith(b"HTTP/1.1 100 ")
    assert b"HTTP/1.1 200" in received
    assert upstream.seen[-1] == {"host": host, "path": "/push",
                                 "authorization": f"Bearer {TOKEN}", "body": 7}  # fmt: skip


async def test_a_host_not_allowed_is_refused_with_a_reason_the_model_can_read(
    proxy: Running,
) -> None:
    status, body = await asyncio.to_thread(
        _get, "https://evil.example/steal", proxy.port, proxy.bundle
    )
    # urllib reports a refused CONNECT as an OSError carrying the status line.
    assert status in (0, 403)
    assert "403" in body or "not one of this Agent's egress hosts" in body
    status, body = await asyncio.to_thread(
        _get, "http://evil.example/steal", proxy.port, proxy.bundle
    )
    assert status == 403
    assert "evil.example:80 is not one of this Agent's egress hosts" in body
    assert "spec.sandbox.egress.hosts" in body
    await _eventually_recorded(proxy.records, 2)
    assert {r.decision for r in proxy.records} == {"refused"}
    assert {r.host for r in proxy.records} == {"evil.example"}


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_through_the_proxy_reads_the_refusal(upstream: Upstream, proxy: Running) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        ["curl", "-sS", "--proxy", f"http://127.0.0.1:{proxy.port}", "--cacert",
         str(proxy.bundle), f"https://pypi.test:{upstream.port}/ok", "https://evil.example/"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert f"hello from pypi.test:{upstream.port}/ok" in result.stdout
    assert "403" in result.stderr


async def test_a_tunnel_cannot_carry_tls_for_another_host(
    upstream: Upstream, proxy: Running
) -> None:
    """CONNECT to an allowed name, then a ClientHello naming a host that is not allowed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(f"CONNECT pypi.test:{upstream.port} HTTP/1.1\r\n\r\n".encode())
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    context = ssl.create_default_context(cadata=upstream.ca_pem.decode())
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await writer.start_tls(context, server_hostname="evil.example")
    writer.close()
    await _eventually_recorded(proxy.records, 1)
    assert proxy.records[-1].decision == "refused"
    assert "names evil.example" in proxy.records[-1].reason


def test_the_client_hello_parser_finds_the_server_name() -> None:
    """A ClientHello as OpenSSL writes it, captured through a memory BIO."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="files.pythonhosted.org")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert server_name(hello) == "files.pythonhosted.org"
    assert server_name(b"GET / HTTP/1.1\r\n") is None
    assert server_name(hello[:20]) is None  # cut short: no name, no exception


def test_tls_cut_mid_record_ends_the_read_instead_of_waiting() -> None:
    """A host that closes its connection halfway through a TLS record: the proxy's TLS sees
    the end (so the relay reports a truncated body) rather than waiting for the rest."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("cut.test").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    listener = socket.create_server(("127.0.0.1", 0))
    served: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with conn:
                tls = BioTLS(conn, server_context, server_side=True)
                tls.handshake()
                tls.tls.write(b"y" * 10_000)  # one record, held back in the memory BIO
                record = tls._out.read()
                conn.sendall(record[: len(record) // 2])
        except BaseException as err:  # reported by the test's thread
            served.append(err)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        sock = socket.create_connection(listener.getsockname()[:2], timeout=10)
        with sock:
            client = BioTLS(sock, client_context, server_side=False, server_hostname="cut.test")
            client.handshake()
            assert client.read_available(memoryview(bytearray(65536))) == 0
    finally:
        thread.join(timeout=10)
        listener.close()
    assert not served
