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

Why a small asyncio proxy rather than mitmproxy used as a library: mitmproxy brings dozens of
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
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11

from cadre.api.egress import HostRule, allowed, parse_rule
from cadre.harness.egress_tls import Authority, server_name

log = logging.getLogger(__name__)
MAX_HEAD = 64 * 1024
CHUNK = 256 * 1024
BUFFER = 4 * 1024 * 1024
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
        self.server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        self.server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)
        bound: int = self.server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    def _credential(self, host: str, port: int) -> Credential | None:
        return next((c for c in self.credentials if c.rule.matches(host, port)), None)

    def _refusal(self, host: str, port: int) -> str:
        return (
            f"cadre egress proxy: {host}:{port} is not one of this Agent's egress hosts"
            f" (spec.sandbox.egress.hosts: {', '.join(self.entries)}); ask whoever runs the"
            " Agent to add it"
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        peer = writer.get_extra_info("peername") or ("?", 0)
        record = EgressRecord(client=str(peer[0]), host="", port=0, decision="refused")
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            if method == "CONNECT":
                record.host, record.port = _split_host_port(target, 443)
                await self._connect(reader, writer, record)
            else:
                await self._plain(head, method, target, reader, writer, record)
        except _Refused as refused:
            record.decision, record.reason = "refused", str(refused)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as err:
            record.reason = record.reason or f"bad request: {type(err).__name__}"
        except (OSError, TimeoutError, ssl.SSLError, h11.ProtocolError) as err:
            record.reason = record.reason or f"{type(err).__name__}: {err}"
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            self._handlers.discard(task)
            if record.host:
                self.on_record(record)

    async def _refuse(self, writer: asyncio.StreamWriter, record: EgressRecord) -> None:
        text = self._refusal(record.host, record.port).encode() + b"\n"
        # The reason phrase says it too: after a refused CONNECT, clients show the status line
        # (pip: "Tunnel connection failed: 403 ..."), not the body.
        reason = f"{record.host}:{record.port} is not an egress host of this Agent"
        head = (
            f"HTTP/1.1 403 {reason}\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            f"Content-Length: {len(text)}\r\n\r\n"
        )
        writer.write(head.encode("latin-1", "replace") + text)
        await writer.drain()
        raise _Refused(f"{record.host}:{record.port} is not an egress host")

    async def _connect(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: EgressRecord
    ) -> None:
        if not allowed(self.rules, record.host, record.port):
            await self._refuse(writer, record)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        credential = self._credential(record.host, record.port)
        if credential is not None and self.authority is not None:
            await self._intercept(reader, writer, record, credential)
            return
        # A TLS record header, then the ClientHello it announces (it may span segments).
        first = await asyncio.wait_for(reader.readexactly(5), 30)
        if first[0] == 0x16:
            first += await asyncio.wait_for(
                reader.readexactly(int.from_bytes(first[3:5], "big")), 30
            )
            named = server_name(first)
            if named is not None and named != record.host:
                raise _Refused(f"the TLS ClientHello names {named}, not {record.host}")
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(self.resolve(record.host), record.port), 30
        )
        record.decision = "allowed"
        up_writer.write(first)
        record.bytes_out += len(first)
        try:
            await asyncio.gather(
                _pipe(reader, up_writer, record, "bytes_out"),
                _pipe(up_reader, writer, record, "bytes_in"),
            )
        finally:
            up_writer.close()

    async def _intercept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: EgressRecord,
        credential: Credential,
    ) -> None:
        assert self.authority is not None
        context = self.authority.context(record.host)
        # Larger buffers each way: a download is relayed in a few large writes, not many
        # small ones each waiting for the other side to drain.
        writer.transport.set_write_buffer_limits(high=BUFFER)
        try:
            await writer.start_tls(context)  # refuses a ClientHello naming another host
        except ssl.SSLError as err:
            raise _Refused(f"TLS with the sandbox failed: {err.reason or err}") from err
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(self.resolve(record.host), record.port,
                                    ssl=self.upstream_tls, server_hostname=record.host,
                                    limit=BUFFER),
            30,
        )  # fmt: skip
        record.decision, record.intercepted, record.credential = "allowed", True, True
        try:
            await _relay_http(reader, writer, up_reader, up_writer, record, credential, b"")
        finally:
            up_writer.close()

    async def _plain(
        self,
        head: bytes,
        method: str,
        target: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        record: EgressRecord,
    ) -> None:
        if not target.startswith("http://"):
            raise ValueError("not a proxy request")
        authority, _, path = target[len("http://") :].partition("/")
        record.host, record.port = _split_host_port(authority, 80)
        if not allowed(self.rules, record.host, record.port):
            await self._refuse(writer, record)
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(self.resolve(record.host), record.port), 30
        )
        record.decision = "allowed"
        # The request line in origin form; the rest of the head as the client sent it.
        rest = head.split(b"\r\n", 1)[1]
        version = head.split(b"\r\n", 1)[0].rsplit(b" ", 1)[1]
        first = f"{method} /{path} ".encode() + version + b"\r\n" + rest
        try:
            await _relay_http(reader, writer, up_reader, up_writer, record, None, first)
        finally:
            up_writer.close()


async def _pipe(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, record: EgressRecord, counter: str
) -> None:
    try:
        while chunk := await source.read(CHUNK):
            sink.write(chunk)
            setattr(record, counter, getattr(record, counter) + len(chunk))
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.close()


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(await reader.read(CHUNK))


def _content_length(response: Any) -> int | None:
    headers = {k.lower(): v for k, v in response.headers}
    if b"transfer-encoding" in headers or b"content-length" not in headers:
        return None
    return int(headers[b"content-length"])


async def _relay_body_raw(
    response: Any,
    size: int,
    upstream: h11.Connection,
    up_reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
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
    writer.write(data)
    record.bytes_in += len(data)
    while left > 0:
        chunk = await up_reader.read(min(CHUNK, left))
        if not chunk:
            raise ConnectionError("the host closed the connection before the body's end")
        writer.write(chunk)
        record.bytes_in += len(chunk)
        left -= len(chunk)
        await writer.drain()
    await writer.drain()


async def _relay_http(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    record: EgressRecord,
    credential: Credential | None,
    first: bytes,
) -> None:
    """HTTP/1.1 requests from the sandbox to the host, one after another on this connection,
    the credential's header set on each (replacing one the sandbox sent)."""
    client = h11.Connection(h11.SERVER)
    upstream = h11.Connection(h11.CLIENT)
    if first:
        client.receive_data(first)

    def send_up(event: Any) -> None:
        data = upstream.send(event) or b""
        record.bytes_out += len(data)
        up_writer.write(data)

    def send_back(event: Any) -> None:
        data = client.send(event) or b""
        record.bytes_in += len(data)
        writer.write(data)

    while True:
        request = await _next(client, reader)
        if not isinstance(request, h11.Request):
            return  # the sandbox closed the connection
        headers = list(request.headers)
        if credential is not None:
            name, value = credential.header_pair()
            headers = [(k, v) for k, v in headers if k.decode().lower() != name.lower()]
            headers.append((name.encode(), value.encode()))
        send_up(h11.Request(method=request.method, target=request.target, headers=headers))
        while True:
            event = await _next(client, reader)
            send_up(event)
            if isinstance(event, h11.EndOfMessage):
                break
        await up_writer.drain()
        while True:
            event = await _next(upstream, up_reader)
            if isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.Response) and request.method != b"HEAD":
                size = _content_length(event)
                if size is not None and size > RAW_BODY_BYTES:
                    await _relay_body_raw(event, size, upstream, up_reader, writer, client, record)
                    return
            send_back(event)
            await writer.drain()
            if isinstance(event, h11.EndOfMessage):
                break
        if h11.MUST_CLOSE in (client.our_state, upstream.our_state, upstream.their_state):
            return
        client.start_next_cycle()
        upstream.start_next_cycle()
