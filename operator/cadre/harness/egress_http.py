"""HTTP/1.1 through the egress proxy, between the sandbox and the hosts it may reach.

Requests on one connection from the sandbox are relayed one after another, h11 parsing each
side. Each request is routed on its own (``Router``): an intercepted connection goes to its
one host with the credential set; a plain-HTTP proxy connection names a host in every request
(clients keep one connection to the proxy for every ``http://`` host, as urllib3 does), so each
request is checked and sent to the host it names. Large bodies of known length are copied raw.
A host that switches protocols (``101``: a WebSocket) gets the connection spliced raw both
ways from then on, as the upgrade asks."""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import h11

from cadre.harness.egress_tls import BioTLS

MAX_HEAD = 64 * 1024
CHUNK = 1024 * 1024
RAW_BODY_BYTES = 1024 * 1024
"""Responses longer than this are copied raw (downloads: packages, git packs)."""
IDLE_SECONDS = 600
"""A connection waited on this long is closed (every socket's timeout; a spliced one when
both ways are silent)."""


Conn = socket.socket | BioTLS
"""A blocking connection: a socket, or TLS over one."""


class Counts(Protocol):
    """Where the bytes of one destination are counted (an ``EgressRecord``)."""

    bytes_out: int
    """From the sandbox to the host."""
    bytes_in: int


class Stream:
    """A blocking connection with what was read past a request's head kept for the next read."""

    def __init__(self, sock: Conn) -> None:
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


@dataclass
class Route:
    """Where one request goes: the host's connection, the request as the host gets it, and the
    record its bytes count on."""

    conn: Conn
    request: h11.Request
    counts: Counts


Router = Callable[[h11.Request], Route]
"""Routes a request from the sandbox; raises (after answering the sandbox) to refuse it."""


def relay_http(stream: Stream, router: Router) -> None:
    """Requests from ``stream`` to their hosts and the answers back, until either side ends the
    connection."""
    client = h11.Connection(h11.SERVER)
    if stream.pending:
        client.receive_data(stream.pending)
        stream.pending = b""
    up: Conn | None = None
    upstream = h11.Connection(h11.CLIENT)

    while True:
        request = _next(client, stream.sock)
        if not isinstance(request, h11.Request):
            return  # the sandbox closed the connection
        route = router(request)
        if route.conn is not up:  # another host: a connection of its own
            up, upstream = route.conn, h11.Connection(h11.CLIENT)
        sent = route.request
        if client.they_are_waiting_for_100_continue:
            # Answered here, as nginx does: the host gets the body without being asked first
            # (waiting on its 100 while the client may send anyway needs both ways at once).
            go_on = h11.InformationalResponse(status_code=100, headers=[])
            _send(client, go_on, stream.sock, route.counts, "bytes_in")
            headers = [(k, v) for k, v in sent.headers if k.lower() != b"expect"]
            sent = h11.Request(method=sent.method, target=sent.target, headers=headers)
        _send(upstream, sent, route.conn, route.counts, "bytes_out")
        while True:
            event = _next(client, stream.sock)
            _send(upstream, event, route.conn, route.counts, "bytes_out")
            if isinstance(event, h11.EndOfMessage):
                break
        while True:
            event = _next(upstream, route.conn)
            if isinstance(event, h11.ConnectionClosed):
                return
            if isinstance(event, h11.Response) and request.method != b"HEAD":
                size = _content_length(event)
                if size is not None and size > RAW_BODY_BYTES:
                    _relay_body_raw(event, size, upstream, route.conn, stream.sock, client,
                                    route.counts)  # fmt: skip
                    return
            _send(client, event, stream.sock, route.counts, "bytes_in")
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                _switch(client, stream.sock, upstream, route.conn, route.counts)
                return
            if isinstance(event, h11.EndOfMessage):
                break
        if h11.MUST_CLOSE in (client.our_state, upstream.our_state, upstream.their_state):
            return
        client.start_next_cycle()
        upstream.start_next_cycle()


def _send(conn: h11.Connection, event: Any, sock: Conn, counts: Counts, counter: str) -> None:
    data = conn.send(event) or b""
    setattr(counts, counter, getattr(counts, counter) + len(data))
    sock.sendall(data)


def _next(conn: h11.Connection, sock: Conn) -> Any:
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
    up: Conn,
    client_sock: Conn,
    client: h11.Connection,
    counts: Counts,
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
    counts.bytes_in += len(data)
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    while left > 0:
        got = _read_some(up, view[: min(CHUNK, left)])
        if not got:
            raise ConnectionError("the host closed the connection before the body's end")
        client_sock.sendall(view[:got])
        counts.bytes_in += got
        left -= got


def _switch(
    client: h11.Connection, client_sock: Conn, upstream: h11.Connection, up: Conn, counts: Counts
) -> None:
    """After a 101: what either side sent past the HTTP exchange, then both ways raw."""
    early_up, _ = upstream.trailing_data
    early_client, _ = client.trailing_data
    if early_up:
        client_sock.sendall(early_up)
        counts.bytes_in += len(early_up)
    if early_client:
        up.sendall(early_client)
        counts.bytes_out += len(early_client)
    splice(client_sock, up, counts)


def splice(sandbox: Conn, host: Conn, counts: Counts) -> None:
    """Both ways at once on this thread, until either side ends or both are idle for
    ``IDLE_SECONDS``. One thread, since TLS state (``BioTLS``) must not be used by two."""
    with selectors.DefaultSelector() as selector:
        ways = {sandbox: (host, "bytes_out"), host: (sandbox, "bytes_in")}
        for conn in ways:
            selector.register(_socket(conn), selectors.EVENT_READ, conn)
        buffer = bytearray(CHUNK)
        view = memoryview(buffer)
        while True:
            # Plaintext TLS already decrypted waits in its buffer, not on the socket.
            ready = [c for c in ways if _buffered(c)] or [
                key.data for key, _ in selector.select(IDLE_SECONDS)
            ]
            if not ready:
                return
            for source in ready:
                got = _read_some(source, view)
                if not got:
                    return
                sink, counter = ways[source]
                sink.sendall(view[:got])
                setattr(counts, counter, getattr(counts, counter) + got)


def _read_some(conn: Conn, view: memoryview) -> int:
    # From TLS, every record already received at once (see BioTLS), written as one piece.
    return conn.read_available(view) if isinstance(conn, BioTLS) else conn.recv_into(view)


def _socket(conn: Conn) -> socket.socket:
    return conn.sock if isinstance(conn, BioTLS) else conn


def _buffered(conn: Conn) -> bool:
    return isinstance(conn, BioTLS) and conn.buffered()
