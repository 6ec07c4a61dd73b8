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
- plain HTTP is relayed to allowed hosts; a credential is never sent over it;
- each connection is accounted (host, port, bytes each way, allowed or refused, credential
  applied or not, never its value) through ``on_record``.

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
from typing import Any, Protocol

import h11

from cadre.api.egress import HostRule, allowed, parse_rule
from cadre.harness.egress_tls import Authority, BioTLS, server_name

log = logging.getLogger(__name__)
MAX_HEAD = 64 * 1024
CHUNK = 1024 * 1024
MAX_CONNECTIONS = 256
"""Connections served at once (a thread each); more wait to be accepted."""
IDLE_SECONDS = 600
"""A connection silent this long either way is closed."""
RAW_BODY_BYTES = 1024 * 1024
"""Responses longer than this are copied raw (downloads: packages, git packs)."""


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


class _Conn(Protocol):
    """A blocking connection: a socket, or TLS over one (``BioTLS``)."""

    def recv(self, size: int, /) -> bytes: ...

    def recv_into(self, buffer: bytearray | memoryview, size: int = 0, /) -> int: ...

    def sendall(self, data: bytes | bytearray | memoryview, /) -> None: ...


class _Stream:
    """A blocking connection with what was read past a request's head kept for the next read."""

    def __init__(self, sock: _Conn) -> None:
        self.sock = sock
        self.pending = b""

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.pending:
            if len(self.pending) > MAX_HEAD:
                raise ValueError("request head too long")
            chunk = self.sock.recv(CHUNK)
            if not chunk:
                raise ConnectionError("closed before the request's head ended")
            self.pending += chunk
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def exactly(self, size: int) -> bytes:
        while len(self.pending) < size:
            chunk = self.sock.recv(CHUNK)
            if not chunk:
                raise ConnectionError("closed early")
            self.pending += chunk
        data, self.pending = self.pending[:size], self.pending[size:]
        return data


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
        self._served: set[asyncio.Future[EgressRecord | None]] = set()

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

    def _done(self, served: asyncio.Future[EgressRecord | None]) -> None:
        self._served.discard(served)
        record = None if served.cancelled() else served.result()
        if record is not None:
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

    def _serve(self, conn: socket.socket, client: str) -> EgressRecord | None:
        """One connection from a sandbox, start to end (on a thread of its own)."""
        record = EgressRecord(client=client, host="", port=0, decision="refused")
        upstream: list[socket.socket] = []
        self._track(conn)
        stream = _Stream(conn)
        try:
            head = stream.head()
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                record.host, record.port = _split_host_port(target, 443)
                self._connect(conn, stream, record, upstream)
            else:
                self._plain(head, method, target, stream, record, upstream)
        except _Refused as refused:
            record.decision, record.reason = "refused", str(refused)
        except (ValueError, IndexError) as err:
            record.reason = record.reason or f"bad request: {err}"
        except (OSError, ssl.SSLError, h11.ProtocolError) as err:
            record.reason = record.reason or f"{type(err).__name__}: {err}"
        finally:
            self._forget(conn, *upstream)
        return record if record.host else None

    def _open_upstream(self, record: EgressRecord, upstream: list[socket.socket]) -> socket.socket:
        sock = socket.create_connection((self.resolve(record.host), record.port), timeout=30)
        upstream.append(self._track(sock))
        return sock

    def _refuse(self, stream: _Stream, record: EgressRecord) -> None:
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
        stream: _Stream,
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
        stream: _Stream,
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
        try:
            _relay_http(stream, up, record, credential)
        finally:  # a clean end of TLS each way (the sockets close after)
            tls.close_notify()
            up.close_notify()

    def _plain(
        self,
        head: bytes,
        method: str,
        target: str,
        stream: _Stream,
        record: EgressRecord,
        upstream: list[socket.socket],
    ) -> None:
        if not target.startswith("http://"):
            raise ValueError("not a proxy request")
        authority, _, path = target[len("http://") :].partition("/")
        record.host, record.port = _split_host_port(authority, 80)
        if not allowed(self.rules, record.host, record.port):
            self._refuse(stream, record)
        sock = self._open_upstream(record, upstream)
        record.decision = "allowed"
        # The request line in origin form; the rest of the head as the client sent it.
        rest = head.split(b"\r\n", 1)[1]
        version = head.split(b"\r\n", 1)[0].rsplit(b" ", 1)[1]
        stream.pending = f"{method} /{path} ".encode() + version + b"\r\n" + rest + stream.pending
        _relay_http(stream, sock, record, None)


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


def _next(conn: h11.Connection, sock: _Conn) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(sock.recv(CHUNK))


def _content_length(response: Any) -> int | None:
    headers = {k.lower(): v for k, v in response.headers}
    if b"transfer-encoding" in headers or b"content-length" not in headers:
        return None
    return int(headers[b"content-length"])


def _relay_body_raw(
    response: Any,
    size: int,
    upstream: h11.Connection,
    up: _Conn,
    client_sock: _Conn,
    client: h11.Connection,
    record: EgressRecord,
) -> None:
    """A large body of known length is copied as it comes, not parsed event by event (the
    connection then closes: the client opens another for its next request)."""
    headers = [(k, v) for k, v in response.headers if k.lower() != b"connection"]
    head = h11.Response(status_code=response.status_code, headers=[*headers, (b"connection",
                        b"close")], reason=response.reason)  # fmt: skip
    data = client.send(head) or b""
    left = size
    while left > 0:  # what h11 already read beyond the head
        event = upstream.next_event()
        if not isinstance(event, h11.Data):
            break
        data += bytes(event.data)
        left -= len(event.data)
    client_sock.sendall(data)
    record.bytes_in += len(data)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while left > 0:
        # From TLS, every record already received at once (see BioTLS), written as one piece.
        wanted = view[: min(CHUNK, left)]
        got = up.read_available(wanted) if isinstance(up, BioTLS) else up.recv_into(wanted)
        if not got:
            raise ConnectionError("the host closed the connection before the body's end")
        client_sock.sendall(view[:got])
        record.bytes_in += got
        left -= got


def _relay_http(
    stream: _Stream, up: _Conn, record: EgressRecord, credential: Credential | None
) -> None:
    """HTTP/1.1 requests from the sandbox to the host, one after another on this connection,
    the credential's header set on each (replacing one the sandbox sent)."""
    client = h11.Connection(h11.SERVER)
    upstream = h11.Connection(h11.CLIENT)
    if stream.pending:
        client.receive_data(stream.pending)
        stream.pending = b""

    def send_up(event: Any) -> None:
        data = upstream.send(event) or b""
        record.bytes_out += len(data)
        up.sendall(data)

    def send_back(event: Any) -> None:
        data = client.send(event) or b""
        record.bytes_in += len(data)
        stream.sock.sendall(data)

    while True:
        request = _next(client, stream.sock)
        if not isinstance(request, h11.Request):
            return  # the sandbox closed the connection
        headers = list(request.headers)
        if credential is not None:
            name, value = credential.header_pair()
            headers = [(k, v) for k, v in headers if k.decode().lower() != name.lower()]
            headers.append((name.encode(), value.encode()))
        send_up(h11.Request(method=request.method, target=request.target, headers=headers))
        while True:
            event = _next(client, stream.sock)
            send_up(event)
            if isinstance(event, h11.EndOfMessage):
                break
        while True:
            event = _next(upstream, up)
            if isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.Response) and request.method != b"HEAD":
                size = _content_length(event)
                if size is not None and size > RAW_BODY_BYTES:
                    _relay_body_raw(event, size, upstream, up, stream.sock, client, record)
                    return
            send_back(event)
            if isinstance(event, h11.EndOfMessage):
                break
        if h11.MUST_CLOSE in (client.our_state, upstream.our_state, upstream.their_state):
            return
        client.start_next_cycle()
        upstream.start_next_cycle()
