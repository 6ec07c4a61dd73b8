"""NetworkPolicies as an nftables ruleset: what a CNI's policy agent computes, as one pure
function from the node's pods, the namespaces' labels and the stored policies to the text
``nft -f`` loads in one transaction (``network.py`` does the loading).

Semantics are Kubernetes' (networking.k8s.io/v1):
- a pod is isolated for ingress (egress) when any policy of its namespace selects it with
  ``Ingress`` (``Egress``) in ``policyTypes``; what is then allowed is the union of those
  policies' rules, and the reply packets of an allowed connection always pass (stateful);
- a rule's peers are pods (``podSelector`` in the policy's namespace, ``namespaceSelector``,
  or both), or an ``ipBlock`` with its ``except``; a rule without peers allows every peer, one
  without ports every port; ``port`` may be a number, a range (``endPort``) or a container
  port's name;
- traffic from the node to its pods (kubelet probes, the API server's pod proxy) is not
  filtered, as CNIs let it through; traffic from a pod to the node is egress like any other.

Egress is matched on the connection's original destination (conntrack), so a pod that reaches
the API server at ``NODE:443`` (translated to the API server's loopback port) is judged by
``443``, the port its policy names, as a Service's client is on a real cluster.

Refused connections are rejected (TCP reset, ICMP administratively prohibited) rather than
dropped, so a tool in a sandbox fails at once instead of waiting out a timeout.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cadre.localcluster.apiserver.selectors import label_selector_matches

Obj = dict[str, Any]

INTERFACE_PREFIX = "cadre"
"""Host ends of pod interfaces are ``cadre<slot>`` (slots are unique machine-wide)."""


@dataclass(frozen=True)
class NetPod:
    """A pod of this node with its address, as the ruleset needs it."""

    namespace: str
    labels: Mapping[str, str]
    ip: str
    interface: str
    named_ports: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """Container port name -> (protocol, number), for policies that name ports."""


@dataclass(frozen=True)
class NodeNetwork:
    table: str
    """This kubelet's own nftables table (``ip`` family)."""
    node_ip: str
    """The node's address as pods see it (the host end of every pod's link)."""
    pod_cidr: str
    api_port: int
    """The API server's loopback port: pods reach it at ``node_ip:443``."""
    relay_port: int = 0
    """The kubelet's relay for TCP beyond the machine (``egress.py``); 0: none."""
    dns_port: int = 0
    """The kubelet's relay for DNS over UDP; 0: none."""


def _policies_of(pod: NetPod, policies: Sequence[Obj], kind: str) -> list[Obj]:
    return [
        p
        for p in policies
        if p["metadata"].get("namespace") == pod.namespace
        and kind in (p.get("spec", {}).get("policyTypes") or ["Ingress"])
        and label_selector_matches(p.get("spec", {}).get("podSelector"), dict(pod.labels))
    ]


def _peer_pods(
    peer: Obj, policy_namespace: str, pods: Sequence[NetPod], namespaces: Mapping[str, Any]
) -> list[NetPod]:
    pod_selector = peer.get("podSelector")
    namespace_selector = peer.get("namespaceSelector")
    chosen = []
    for pod in pods:
        namespace_labels = dict(namespaces.get(pod.namespace) or {})
        if namespace_selector is None:
            if pod.namespace != policy_namespace:
                continue
        elif not label_selector_matches(namespace_selector, namespace_labels):
            continue
        if label_selector_matches(pod_selector, dict(pod.labels)):
            chosen.append(pod)
    return chosen


def _address_matches(
    peers: Sequence[Obj] | None,
    key: str,
    policy_namespace: str,
    pods: Sequence[NetPod],
    namespaces: Mapping[str, Any],
) -> list[str]:
    """nft expressions selecting the peers' addresses (``key``: ``ip saddr`` or the original
    destination); [""] for any address; [] when the peers match nothing."""
    if not peers:
        return [""]
    found: list[str] = []
    for peer in peers:
        block = peer.get("ipBlock")
        if block is not None:
            network = ipaddress.ip_network(block["cidr"], strict=False)
            if network.version != 4:
                continue  # pods here have IPv4 addresses only
            excepts = [
                str(ipaddress.ip_network(e, strict=False))
                for e in block.get("except") or []
                if ipaddress.ip_network(e, strict=False).version == 4
            ]
            text = f"{key} {network}"
            if excepts:
                text += f" {key} != {{ {', '.join(excepts)} }}"
            found.append(text)
            continue
        ips = sorted({p.ip for p in _peer_pods(peer, policy_namespace, pods, namespaces)})
        if ips:
            found.append(f"{key} {{ {', '.join(ips)} }}")
    return found


def _port_matches(
    ports: Sequence[Obj] | None, port_key: str, named: Mapping[str, list[tuple[str, int]]]
) -> list[str]:
    """nft expressions selecting protocol and port; [""] for any; [] when nothing matches."""
    if not ports:
        return [""]
    by_protocol: dict[str, list[str]] = {}
    anyport: set[str] = set()
    for entry in ports:
        protocol = str(entry.get("protocol", "TCP")).lower()
        port = entry.get("port")
        if port is None:
            anyport.add(protocol)
            continue
        if isinstance(port, str) and not port.isdigit():
            for named_protocol, number in named.get(port, []):
                if named_protocol == protocol:
                    by_protocol.setdefault(protocol, []).append(str(number))
            continue
        end = entry.get("endPort")
        by_protocol.setdefault(protocol, []).append(f"{port}-{end}" if end else str(port))
    found = [f"meta l4proto {p}" for p in sorted(anyport)]
    for protocol, numbers in sorted(by_protocol.items()):
        if protocol in anyport:
            continue
        listed = ", ".join(sorted(set(numbers)))
        found.append(f"meta l4proto {protocol} {port_key} {{ {listed} }}")
    return found


def _chain(
    name: str,
    pod: NetPod,
    policies: Sequence[Obj],
    direction: str,
    pods: Sequence[NetPod],
    namespaces: Mapping[str, Any],
) -> list[str]:
    """One isolated pod's chain: each allowed (peer, port) returns to the base chain; what is
    left is refused."""
    lines = [f"  chain {name} {{"]
    if direction == "ingress":
        address_key, port_key, peers_key, rules_key = "ip saddr", "th dport", "from", "ingress"
        named = {n: [pp] for n, pp in pod.named_ports.items()}
    else:
        address_key, port_key = "ct original ip daddr", "ct original proto-dst"
        peers_key, rules_key = "to", "egress"
        named = {}
        for other in pods:
            for n, pp in other.named_ports.items():
                named.setdefault(n, []).append(pp)
    for policy in policies:
        namespace = policy["metadata"]["namespace"]
        for rule in policy.get("spec", {}).get(rules_key) or []:
            addresses = _address_matches(rule.get(peers_key), address_key, namespace, pods,
                                         namespaces)  # fmt: skip
            for address in addresses:
                for port in _port_matches(rule.get("ports"), port_key, named):
                    lines.append("    " + " ".join(x for x in (address, port, "return") if x))
    lines += [
        "    meta l4proto tcp reject with tcp reset",
        "    reject with icmp type admin-prohibited",
        "  }",
    ]
    return lines


def _names(items: Iterable[str]) -> str:
    return "{ " + ", ".join(f'"{i}"' for i in sorted(items)) + " }"


def ruleset(
    node: NodeNetwork,
    pods: Sequence[NetPod],
    namespaces: Mapping[str, Mapping[str, str]],
    policies: Sequence[Obj],
) -> str:
    """The node's whole table, replacing the previous one atomically (``nft -f``)."""
    table = f"ip {node.table}"
    out = [f"table {table}", f"delete table {table}", f"table {table} {{"]
    mine = [p.interface for p in pods]
    out += [
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
    ]
    if mine:
        # The node's services listen on loopback; pods reach them at the node's address
        # (route_localnet is set on each pod's link), the API server at 443 as in-cluster.
        out += [
            f"    iifname {_names(mine)} ip daddr {node.node_ip} tcp dport 443"
            f" dnat to 127.0.0.1:{node.api_port}",
            f"    iifname {_names(mine)} ip daddr {node.node_ip} dnat to 127.0.0.1",
        ]
        here = f"{{ 127.0.0.0/8, {node.node_ip}, {node.pod_cidr} }}"
        if node.relay_port:
            out.append(f"    iifname {_names(mine)} ip daddr != {here} meta l4proto tcp"
                       f" dnat to 127.0.0.1:{node.relay_port}")  # fmt: skip
        if node.dns_port:
            out.append(f"    iifname {_names(mine)} ip daddr != {here} udp dport 53"
                       f" dnat to 127.0.0.1:{node.dns_port}")  # fmt: skip
    out.append("  }")
    chains: list[str] = []
    jumps_forward: list[str] = []
    jumps_input: list[str] = []
    for index, pod in enumerate(pods):
        egress = _policies_of(pod, policies, "Egress")
        if egress:
            name = f"egress_{index}"
            chains += _chain(name, pod, egress, "egress", pods, namespaces)
            jumps_forward.append(f'    iifname "{pod.interface}" jump {name}')
            jumps_input.append(f'    iifname "{pod.interface}" jump {name}')
        ingress = _policies_of(pod, policies, "Ingress")
        if ingress:
            name = f"ingress_{index}"
            chains += _chain(name, pod, ingress, "ingress", pods, namespaces)
            jumps_forward.append(f'    oifname "{pod.interface}" jump {name}')
    out += chains
    out += [
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        "    ct state established,related accept",
    ]
    if mine:
        refuse = "reject with icmp type admin-prohibited"
        out += [
            # Pods of another local cluster on this machine are another network.
            f'    iifname {_names(mine)} oifname "{INTERFACE_PREFIX}*"'
            f" oifname != {_names(mine)} {refuse}",
            # Beyond this machine only what the kubelet relays (TCP, DNS: translated to the
            # host above); the rest is refused at once rather than left to time out.
            f'    iifname {_names(mine)} oifname != "{INTERFACE_PREFIX}*" {refuse}',
        ]
    out += [*jumps_forward, "  }"]
    out += [
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        "    ct state established,related accept",
        *jumps_input,
        "  }",
        "}",
    ]
    return "\n".join(out) + "\n"
