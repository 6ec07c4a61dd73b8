"""The egress proxy as the harness runs it: its settings from the environment the operator
built (the Agent's checked ``sandbox.egress`` and each credential's value from its Secret), the
Agent's CA from its mounted Secret, and each connection accounted: a metric, and an event in
the session log of the Task whose sandbox made it."""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cadre.api.agent import Egress, EgressMode
from cadre.api.egress import EGRESS_CA_DIR, EGRESS_ENV, credential_env, parse_rule
from cadre.harness.egress_proxy import Credential, EgressProxy, EgressRecord
from cadre.harness.egress_tls import Authority

EVENT = "span.egress"
"""The session-log event of one connection (informational: replay skips it)."""
REFUSED_REASON = "EgressRefused"
"""The reason of the Kubernetes Event a refused connection gives its Task."""


@dataclass(frozen=True)
class EgressSettings:
    egress: Egress
    credentials: list[Credential]


def settings_from_env(env: Mapping[str, str]) -> EgressSettings | None:
    """None unless the Agent's sandboxes use ``Hosts`` egress."""
    raw = env.get(EGRESS_ENV)
    if not raw:
        return None
    egress = Egress.model_validate(json.loads(raw))
    if egress.mode != EgressMode.HOSTS:
        return None
    credentials = [
        Credential(parse_rule(c.host), c.scheme.value, env.get(credential_env(i), ""),
                   c.header or "", c.username or "")
        for i, c in enumerate(egress.credentials)
    ]  # fmt: skip
    return EgressSettings(egress, credentials)


def upstream_context(egress: Egress) -> ssl.SSLContext:
    """Normal verification, with the Agent's ``caBundle`` trusted too."""
    context = ssl.create_default_context()
    if egress.ca_bundle:
        context.load_verify_locations(cadata=base64.b64decode(egress.ca_bundle).decode())
    return context


def build_proxy(
    settings: EgressSettings,
    on_record: Callable[[EgressRecord], None],
    ca_dir: Path = Path(EGRESS_CA_DIR),
) -> EgressProxy:
    authority = Authority.load(ca_dir) if settings.credentials else None
    return EgressProxy(
        list(settings.egress.hosts), settings.credentials, authority, on_record,
        upstream_context(settings.egress),
    )  # fmt: skip


def sandbox_environment(host: str, port: int) -> dict[str, str]:
    """What every tool call's commands get: the proxy for HTTP and HTTPS, in both spellings
    tools read; loopback goes direct."""
    url = f"http://{host}:{port}"
    direct = "localhost,127.0.0.1,::1"
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "http_proxy": url, "https_proxy": url,
            "NO_PROXY": direct, "no_proxy": direct}  # fmt: skip
