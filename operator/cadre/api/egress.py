"""What an Agent's ``Hosts`` egress allows, as pure functions: the harness's egress proxy asks
them for every connection, the operator for the ports its NetworkPolicies open."""

from __future__ import annotations

from dataclasses import dataclass

PROXY_PORT = 3128
"""Where the harness's egress proxy listens (named ``egress`` on the harness pod)."""
DEFAULT_PORTS = (80, 443)
"""The ports a host entry without one allows."""
EGRESS_ENV = "CADRE_EGRESS"
"""The harness's egress settings (hosts, credentials without their values), as JSON."""
EGRESS_CA_DIR = "/var/run/cadre/egress-ca"
"""Where the egress CA is mounted: ``tls.crt`` and ``tls.key`` in the harness pod, ``ca.crt``
(the certificate alone) in its sandboxes."""


def credential_env(index: int) -> str:
    """The harness's environment variable holding the ``index``-th egress credential."""
    return f"CADRE_EGRESS_CREDENTIAL_{index}"


@dataclass(frozen=True)
class HostRule:
    name: str
    """An exact name, or ``*.domain`` (any name below ``domain``, not ``domain`` itself)."""
    ports: tuple[int, ...]

    def matches(self, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        if port not in self.ports:
            return False
        if self.name.startswith("*."):
            return host.endswith(self.name[1:]) and len(host) > len(self.name) - 1
        return host == self.name


def parse_rule(entry: str) -> HostRule:
    """``pypi.org`` (80 and 443), ``*.github.com``, ``pypi.internal:8443``."""
    name, _, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
    return HostRule(name.lower(), (int(port),) if port else DEFAULT_PORTS)


def rules(entries: list[str]) -> list[HostRule]:
    return [parse_rule(e) for e in entries]


def allowed(entries: list[HostRule], host: str, port: int) -> bool:
    return any(rule.matches(host, port) for rule in entries)


def ports(entries: list[str]) -> tuple[int, ...]:
    """Every port the entries allow (the harness's NetworkPolicy opens these)."""
    return tuple(sorted({p for e in entries for p in parse_rule(e).ports}))
