"""The pod network: each pod in its own network namespace with its own address, routed
through the host, and the cluster's NetworkPolicies enforced by nftables (``netpolicy.py``
computes the rules).

Chosen, as root: a veth pair per pod, routed (no bridge), as Calico lays it out. The pod's end
is ``eth0`` with ``10.232.x.y/32`` (from the pod's machine-wide slot, so clusters never share
an address); the host's end is ``cadre<slot>`` carrying the node's address ``10.231.0.1`` and a
/32 route to the pod. Pods reach one another through the host (forwarding is switched on for
these links only, never machine-wide), the node at ``10.231.0.1``, where the node's loopback
services answer (``route_localnet`` on these links and a DNAT in the cluster's table: the API
server at ``:443``, the test model servers at their ports), and the outside world through a
masquerade. Every rule lives in one nftables table per kubelet, replaced atomically, so a
policy and its pod never run one without the other.

Why not rootless: a user-mode network (slirp4netns, passt) can give a rootless pod an address,
but neither filters what a pod may reach, and the pods would not reach each other without a
forwarder per connection; enforcing NetworkPolicies is the point. Not root, or without ``ip``
and ``nft``, pods share the host's network, the kubelet says so at start, and sandboxes of
Agents on the real model API wait (``Unconfined``) unless ``--allow-unconfined``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cadre.localcluster.node.netpolicy import INTERFACE_PREFIX

log = logging.getLogger(__name__)

NODE_IP = "10.231.0.1"
POD_CIDR = "10.232.0.0/16"
_TABLE_PREFIX = "cadre_kubelet_"


def pod_ip(slot: int) -> str:
    return f"10.232.{slot >> 8}.{slot & 255}"


def interface(slot: int) -> str:
    return f"{INTERFACE_PREFIX}{slot}"


def netns_name(slot: int) -> str:
    return f"cadre-{slot}"


def netns_path(slot: int) -> str:
    return f"/run/netns/{netns_name(slot)}"


def as_seen_by_pods(url: str, node_ip: str) -> str:
    """``url`` of a service on the host's loopback as a pod reaches it: at the node's address
    (unchanged when pods share the host's network, ``node_ip`` 127.0.0.1) (pure)."""
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost") or node_ip == "127.0.0.1":
        return url
    netloc = node_ip + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


class NetworkError(RuntimeError):
    pass


async def _run(argv: list[str], text: str = "") -> None:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate(text.encode())
    if process.returncode != 0:
        raise NetworkError(f"{' '.join(argv[:3])}: {err.decode().strip()}")


def _sysctl(name: str, key: str, value: str) -> None:
    Path(f"/proc/sys/net/ipv4/conf/{name}/{key}").write_text(value)


def _stale_tables() -> list[str]:
    """Tables of kubelets that died without removing them (their rules would match interfaces
    a later pod reuses)."""
    result = subprocess.run(
        ["nft", "list", "tables", "ip"], capture_output=True, text=True, check=False
    )
    stale = []
    for line in result.stdout.splitlines():
        name = line.split()[-1] if line.startswith("table ") else ""
        if not name.startswith(_TABLE_PREFIX):
            continue
        pid = name[len(_TABLE_PREFIX) :].split("_", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            stale.append(name)
    return stale


def probe() -> str | None:
    """None when pods can have their own network here, else why not."""
    if os.geteuid() != 0:
        return "the kubelet does not run as root (a routed veth per pod needs CAP_NET_ADMIN)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    result = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                            check=False)  # fmt: skip
    if result.returncode != 0:
        return f"nft cannot read the ruleset: {result.stderr.strip()}"
    return None


class PodNetwork:
    """One kubelet's pod links and its nftables table."""

    def __init__(self, owner: str) -> None:
        self.table = f"{_TABLE_PREFIX}{os.getpid()}_{owner}"
        self._lock = asyncio.Lock()
        for name in _stale_tables():
            subprocess.run(["nft", "delete", "table", "ip", name], check=False,
                           capture_output=True)  # fmt: skip

    async def attach(self, slot: int) -> None:
        """The pod's namespace and link; a leftover of a crashed cluster with the same slot
        (the slot lock is ours now, so its holder is gone) is removed first."""
        await self.detach(slot)
        ip, name, ns = pod_ip(slot), interface(slot), netns_name(slot)
        host = (
            f"netns add {ns}\n"
            f"link add {name} type veth peer name eth0 netns {ns}\n"
            f"addr add {NODE_IP}/32 dev {name}\n"
            f"link set {name} up\n"
            f"route add {ip}/32 dev {name} src {NODE_IP}\n"
        )
        pod = (
            "link set lo up\n"
            f"addr add {ip}/32 dev eth0\n"
            "link set eth0 up\n"
            f"route add {NODE_IP} dev eth0 scope link\n"
            f"route add default via {NODE_IP} dev eth0\n"
        )
        await _run(["ip", "-batch", "-"], host)
        await _run(["ip", "-n", ns, "-batch", "-"], pod)
        # Forwarding for pod links only (never the machine's ip_forward), and the node's
        # loopback services reachable from them (the DNAT in the table).
        _sysctl(name, "forwarding", "1")
        _sysctl(name, "route_localnet", "1")

    async def detach(self, slot: int) -> None:
        # Deleting the host end takes its peer at once; a deleted namespace would drop its
        # link only later, and a new pod on this slot would find the name taken.
        for argv in (
            ["ip", "link", "del", interface(slot)],
            ["ip", "netns", "del", netns_name(slot)],
        ):
            process = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
            await process.wait()

    async def apply(self, rules: str) -> None:
        async with self._lock:
            await _run(["nft", "-f", "-"], rules)

    def close(self) -> None:
        subprocess.run(["nft", "delete", "table", "ip", self.table], check=False,
                       capture_output=True)  # fmt: skip
