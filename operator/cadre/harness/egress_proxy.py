"""The harness's egress proxy: the only way out of a sandbox in ``Hosts`` mode.

The sandbox's NetworkPolicy lets it reach this proxy (on its harness pod) and nothing else;
``HTTP_PROXY``/``HTTPS_PROXY`` point pip, git and curl at it. For every connection:
- the host and port must be one of the Agent's ``hosts`` (a refusal is a 403 whose text names
  the host and what is allowed, so the model can read why);
- HTTPS without a credential is tunnelled untouched (``CONNECT``), after checking that the TLS
  ClientHello names the host the CONNECT asked for (a tunnel opened for an allowed name cannot
  carry a connection to another one);
- HTTPS to a host with a credential is intercepted: the proxy answers TLS itself with a
  certificate for that host from the Agent's CA (the sandbox trusts the CA's certificate, never
  holds its key), opens TLS to the real host with normal verification, and relays the HTTP/1.1
  exchange with the credential's header set on each request. The credential exists only here;
- plain HTTP is relayed to allowed hosts, each request checked and sent to the host it names
  (one connection to the proxy may carry requests for several); a credential is never sent
  over it;
- a WebSocket (a ``101`` answer to an upgrade) is relayed raw both ways, through interception
  too (the upgrade request carries the credential) (``egress_http``);
- each host a connection reached or was refused is accounted (host, port, bytes each way,
  allowed or refused, credential applied or not, never its value) through ``on_record``.

Each connection is served by blocking code on a thread of its own (sockets and ``ssl``
release the GIL): relaying through asyncio's streams and TLS protocol cost about half the
throughput of a large download; the event loop only accepts connections and accounts them.

Why a small proxy rather than mitmproxy used as a library: mitmproxy brings dozens of
pinned dependencies into the harness image and about a second of start-up, and its addon model
is built around interactive flows; Cadre needs one policy decision per connection, SNI checks
and header injection, which ``ssl``, ``h11`` (already there, under httpx) and ``cryptography``
do in a few hundred lines whose every path is tested.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import h11

from cadre.api.egress import HostRule, allowed, parse_rule
from cadre.harness.egress_http import CHUNK, IDLE_SECONDS, Route, Stream, relay_http
from cadre.harness.egress_tls import Authority, BioTLS, server_name

log = logging.getLogger(__name__)
MAX_CONNECTIONS = 256
"""Connections served at once (a thread each); more wait to be accepted."""


@dataclass(frozen=True)
class Credential:
    rule: HostRule
    scheme: str
    value: str
    header: str = ""
    username: str = ""

    def header_pair(self) -> tuple[str, str]:
        if self.scheme == "Bearer":
            return "Authorization", f"Bearer {self.value}"
        if self.scheme == "Basic":
            encoded = base64.b64encode(f"{self.username}:{self.value}".encode()).decode()
            return "Authorization", f"Basic {encoded}"
        return self.header, self.value


@dataclass
class EgressRecord:
    """One connection, as accounted (never a credential's value)."""

    client: str
    host: str
    port: int
    decision: str
    """``allowed`` or ``refused``."""
    credential: bool = False
    intercepted: bool = False
    bytes_out: int = 0
    """From the sandbox to the host."""
    bytes_in: int = 0
    reason: str = ""
    started: float = field(default_factory=time.monotonic)

    def event(self) -> dict[str, Any]:
        return {
            "client": self.client, "host": self.host, "port": self.port,
            "decision": self.decision, "credential": self.credential,
            "intercepted": self.intercepted, "bytes_out": self.bytes_out,
            "bytes_in": self.bytes_in, "reason": self.reason,
            "seconds": round(time.monotonic() - self.started, 3),
        }  # fmt: skip


class _Refused(Exception):  # noqa: N818 - a decision, not a failure
    pass


def _split_host_port(target: str, default: int) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or "]" in port:
        return target.lower(), default
    return host.strip("[]").lower(), int(port)


class EgressProxy:
    def __init__(
        self,
        hosts: list[str],
        credentials: list[Credential],
        authority: Authority | None,
        on_record: Callable[[EgressRecord], None],
        upstream_tls: ssl.SSLContext | None = None,
        resolve: Callable[[str], str] = lambda host: host,
    ) -> None:
        self.entries = hosts
        self.rules = [parse_rule(h) for h in hosts]
        self.credentials = credentials
        self.authority = authority
        self.on_record = on_record
        self.upstream_tls = upstream_tls or ssl.create_default_context()
        self.resolve = resolve
        """Where a host is (tests point names at loopback; by default the system resolves)."""
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._pool = ThreadPoolExecutor(max_workers=MAX_CONNECTIONS, thread_name_prefix="egress")
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._served: set[asyncio.Future[list[EgressRecord]]] = set()

    async def start(self, host: str, port: int) -> int:
        self._listener = socket.create_server((host, port), backlog=128)
        self._listener.setblocking(False)
        self._accepting = asyncio.get_running_loop().create_task(self._accept(self._listener))
        bound: int = self._listener.getsockname()[1]
        return bound

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, peer = await loop.sock_accept(listener)
            conn.setblocking(True)
            served = loop.run_in_executor(self._pool, self._serve, conn, str(peer[0]))
            self._served.add(served)
            served.add_done_callback(self._done)

    def _done(self, served: asyncio.Future[list[EgressRecord]]) -> None:
        self._served.discard(served)
        if served.cancelled():
            return
        if (error := served.exception()) is not None:  # a fault of the proxy's, not the peers'
            log.error("egress connection failed", exc_info=error)
            return
        for record in served.result():
            self.on_record(record)

    async def close(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            for sock in self._open:  # unblocks the threads serving them
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        await asyncio.gather(*self._served, return_exceptions=True)
        self._pool.shutdown(wait=False)

    def _track(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(IDLE_SECONDS)
        with self._lock:
            self._open.add(sock)
        return sock

    def _forget(self, *socks: socket.socket) -> None:
        for sock in socks:
            with self._lock:
                self._open.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _credential(self, host: str, port: int) -> Credential | None:
        return next((c for c in self.credentials if c.rule.matches(host, port)), None)

    def _refusal(self, host: str, port: int) -> str:
        return (
            f"cadre egress proxy: {host}:{port} is not one of this Agent's egress hosts"
            f" (spec.sandbox.egress.hosts: {', '.join(self.entries)}); ask whoever runs the"
            " Agent to add it"
        )

    def _serve(self, conn: socket.socket, client: str) -> list[EgressRecord]:
        """One connection from a sandbox, start to end (on a thread of its own): a record for
        each host it reached or was refused (plain HTTP may name several on one connection)."""
        records = [EgressRecord(client=client, host="", port=0, decision="refused")]
        upstream: list[socket.socket] = []
        self._track(conn)
        stream = Stream(conn)
        try:
            head = stream.head()
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                records[0].host, records[0].port = _split_host_port(target, 443)
                self._connect(conn, stream, records[0], upstream)
            else:
                stream.pending = head + stream.pending  # parsed again, with those after it
                relay_http(stream, _ByTarget(self, stream, records, upstream))
        except _Refused as refused:
            records[-1].decision, records[-1].reason = "refused", str(refused)
        except (ValueError, IndexError) as err:
            records[-1].reason = records[-1].reason or f"bad request: {err}"
        except (OSError, ssl.SSLError, h11.ProtocolError) as err:
            records[-1].reason = records[-1].reason or f"{type(err).__name__}: {err}"
        finally:
            self._forget(conn, *upstream)
        return [r for r in records if r.host]

    def _open_upstream(self, record: EgressRecord, upstream: list[socket.socket]) -> socket.socket:
        sock = socket.create_connection((self.resolve(record.host), record.port), timeout=30)
        upstream.append(self._track(sock))
        return sock

    def _refuse(self, stream: Stream, record: EgressRecord) -> None:
        text = self._refusal(record.host, record.port).encode() + b"\n"
        # The reason phrase says it too: after a refused CONNECT, clients show the status line
        # (pip: "Tunnel connection failed: 403 ..."), not the body.
        reason = f"{record.host}:{record.port} is not an egress host of this Agent"
        head = (
            f"HTTP/1.1 403 {reason}\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            f"Content-Length: {len(text)}\r\n\r\n"
        )
        stream.sock.sendall(head.encode("latin-1", "replace") + text)
        raise _Refused(f"{record.host}:{record.port} is not an egress host")

    def _connect(
        self,
        conn: socket.socket,
        stream: Stream,
        record: EgressRecord,
        upstream: list[socket.socket],
    ) -> None:
        """A CONNECT: refused, tunnelled untouched, or intercepted (``conn``: the sandbox's
        socket, under ``stream`` until TLS takes it over)."""
        if not allowed(self.rules, record.host, record.port):
            self._refuse(stream, record)
        stream.sock.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        credential = self._credential(record.host, record.port)
        if credential is not None and self.authority is not None:
            self._intercept(conn, stream, record, credential, upstream)
            return
        # A TLS record header, then the ClientHello it announces (it may span segments).
        first = stream.exactly(5)
        if first[0] == 0x16:
            first += stream.exactly(int.from_bytes(first[3:5], "big"))
            named = server_name(first)
            if named is not None and named != record.host:
                raise _Refused(f"the TLS ClientHello names {named}, not {record.host}")
        sock = self._open_upstream(record, upstream)
        record.decision = "allowed"
        sock.sendall(first + stream.pending)
        record.bytes_out += len(first) + len(stream.pending)
        back = threading.Thread(target=_pipe, args=(sock, conn, record, "bytes_in"),
                                name="egress-back", daemon=True)  # fmt: skip
        back.start()
        _pipe(conn, sock, record, "bytes_out")
        back.join()

    def _intercept(
        self,
        conn: socket.socket,
        stream: Stream,
        record: EgressRecord,
        credential: Credential,
        upstream: list[socket.socket],
    ) -> None:
        assert self.authority is not None
        if stream.pending:
            raise _Refused("the sandbox sent data before the tunnel was established")
        tls = BioTLS(conn, self.authority.context(record.host), server_side=True, chunk=CHUNK)
        try:  # the context refuses a ClientHello naming another host
            tls.handshake()
        except ssl.SSLError as err:
            raise _Refused(f"TLS with the sandbox failed: {err.reason or err}") from err
        stream.sock = tls
        sock = self._open_upstream(record, upstream)
        up = BioTLS(sock, self.upstream_tls, server_side=False, server_hostname=record.host,
                    chunk=CHUNK)  # fmt: skip
        up.handshake()
        record.decision, record.intercepted, record.credential = "allowed", True, True
        header, value = (h.encode() for h in credential.header_pair())

        def with_credential(request: h11.Request) -> Route:
            # Set on every request, replacing one the sandbox sent.
            headers = [(k, v) for k, v in request.headers if k.lower() != header.lower()]
            return Route(up, h11.Request(method=request.method, target=request.target,
                                         headers=[*headers, (header, value)]), record)  # fmt: skip

        try:
            relay_http(stream, with_credential)
        finally:  # a clean end of TLS each way (the sockets close after)
            tls.close_notify()
            up.close_notify()


class _ByTarget:
    """Routes plain-HTTP proxy requests (absolute ``http://`` or ``ws://`` URLs), each to the
    host it names: clients keep one connection to the proxy for all such hosts. A new host on
    the connection is checked, gets its own connection and record; a credential is never sent
    over plain HTTP."""

    def __init__(self, proxy: EgressProxy, stream: Stream, records: list[EgressRecord],
                 upstream: list[socket.socket]) -> None:  # fmt: skip
        self.proxy, self.stream, self.records, self.upstream = proxy, stream, records, upstream
        self.sock: socket.socket | None = None

    def __call__(self, request: h11.Request) -> Route:
        target = request.target.decode("latin-1")
        scheme, sep, rest = target.partition("://")
        # ws:// is how some clients (aiohttp) ask a proxy for a WebSocket over plain HTTP.
        if not sep or scheme.lower() not in ("http", "ws"):
            raise ValueError(f"not a proxy request: {target[:100]}")
        authority, _, path = rest.partition("/")
        host, port = _split_host_port(authority, 80)
        record = self.records[-1]
        if self.sock is None or (host, port) != (record.host, record.port):
            if self.sock is not None:
                record = EgressRecord(client=record.client, host="", port=0, decision="refused")
                self.records.append(record)
                self.proxy._forget(self.sock)
                self.upstream.remove(self.sock)
            record.host, record.port = host, port
            if not allowed(self.proxy.rules, host, port):
                self.proxy._refuse(self.stream, record)
            self.sock = self.proxy._open_upstream(record, self.upstream)
            record.decision = "allowed"
        # Origin form for the host; what only the proxy was meant to read goes no further.
        headers = [(k, v) for k, v in request.headers if k.lower() not in _PROXY_HEADERS]
        if not any(k.lower() == b"host" for k, _ in headers):  # an HTTP/1.0 client's request
            headers.append((b"host", authority.encode("latin-1")))
        origin = h11.Request(method=request.method, target=f"/{path}".encode("latin-1"),
                             headers=headers)  # fmt: skip
        return Route(self.sock, origin, record)


_PROXY_HEADERS = (b"proxy-connection", b"proxy-authorization")


def _pipe(source: socket.socket, sink: socket.socket, record: EgressRecord, counter: str) -> None:
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    try:
        while size := source.recv_into(buffer):
            sink.sendall(view[:size])
            setattr(record, counter, getattr(record, counter) + size)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
    except OSError:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)
