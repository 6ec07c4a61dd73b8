"""Pods' connections beyond this machine, made by the kubelet on their behalf.

A routed pod network reaches the outside only if the host forwards for its uplink, which on
Linux means switching forwarding on for that interface (Docker turns on ``ip_forward`` for the
whole machine). The local cluster does not change the machine so: the node's table translates
a pod's TCP connection to an address outside the machine, and its DNS query over UDP, to this
relay on the host's loopback, which opens the connection itself (TCP: to the original
destination, read back with ``SO_ORIGINAL_DST``; DNS: to the host's own name servers). The
pod's NetworkPolicy is judged before, on the original destination, so an egress ``None``
sandbox never gets here.

Not relayed: other UDP, ICMP (refused at once). Pods resolve with the host's resolver
configuration; a resolver on the host's loopback (systemd-resolved's 127.0.0.53) is the pod's
own loopback in its namespace, so names do not resolve there (see docs/localcluster.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import socket
import struct
from pathlib import Path
from typing import cast

from cadre.localcluster.node.network import NODE_IP, POD_CIDR

log = logging.getLogger(__name__)

_SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
_LOCAL = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network(NODE_IP),
    ipaddress.ip_network(POD_CIDR),
)


def original_destination(sock: socket.socket) -> tuple[str, int]:
    """Where a translated connection was going (a ``sockaddr_in`` from conntrack)."""
    raw = sock.getsockopt(socket.SOL_IP, _SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


def name_servers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The host's IPv4 name servers a pod can be relayed to (not loopback ones)."""
    found = []
    with contextlib.suppress(OSError):
        for line in resolv_conf.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                with contextlib.suppress(ValueError):
                    address = ipaddress.ip_address(parts[1])
                    if address.version == 4 and not address.is_loopback:
                        found.append(str(address))
    return found


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()


class _DnsRelay(asyncio.DatagramProtocol):
    def __init__(self, servers: list[str]) -> None:
        self.servers = servers
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._ask(data, addr))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _ask(self, query: bytes, client: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        for server in self.servers:
            answered: asyncio.Future[bytes] = loop.create_future()
            transport, _ = await loop.create_datagram_endpoint(
                functools.partial(_Answer, answered), remote_addr=(server, 53)
            )
            try:
                transport.sendto(query)
                answer = await asyncio.wait_for(answered, 3.0)
            except TimeoutError:
                continue
            finally:
                transport.close()
            if self.transport is not None:
                self.transport.sendto(answer, client)
            return


class _Answer(asyncio.DatagramProtocol):
    """The first datagram back from a name server."""

    def __init__(self, future: asyncio.Future[bytes]) -> None:
        self.future = future

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.future.done():
            self.future.set_result(data)


class EgressRelay:
    """The kubelet's relay for its pods' connections beyond the machine."""

    def __init__(self) -> None:
        self.tcp_port = 0
        self.dns_port = 0
        self._server: asyncio.Server | None = None
        self._dns: asyncio.DatagramTransport | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.tcp_port = self._server.sockets[0].getsockname()[1]
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _DnsRelay(name_servers()), local_addr=("127.0.0.1", 0)
        )
        self._dns = transport
        self.dns_port = transport.get_extra_info("sockname")[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            host, port = original_destination(writer.get_extra_info("socket"))
            if any(ipaddress.ip_address(host) in net for net in _LOCAL):
                return  # only translated connections to the outside come here
            try:
                upstream_reader, upstream_writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), 30
                )
            except (OSError, TimeoutError) as err:
                log.info("pod egress to %s:%d failed: %s", host, port, err)
                return
            try:
                await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
            finally:
                upstream_writer.close()
        except OSError:
            return
        finally:
            writer.close()
            self._connections.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._dns is not None:
            self._dns.close()
