"""Operator-wide defaults from the environment, as the Helm chart sets them from its values.

Each is one variable; a value that does not parse stops the operator at start-up with the
variable named, rather than building every sandbox wrong. The chart's values.schema.json
refuses bad values earlier, at install; this is the check for everyone else."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from cadre import __version__
from cadre.api.names import MODEL_ENDPOINTS_ENV, OTLP_ENDPOINT_ENV
from cadre.operator.harness_builders import HarnessDefaults
from cadre.operator.model_access import DEFAULT_ENDPOINTS, Endpoint, parse_endpoints
from cadre.operator.sandbox_builders import SandboxDefaults

BACKOFF = 3.0
"""Seconds before kopf retries a handler that failed (an API 500, a 429): kopf's default is
60 s, a minute of a Task standing still for one transient error."""
_QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti)?$")
_RESOURCES = ("cpu", "memory", "ephemeral-storage")


class SettingsError(ValueError):
    """An environment variable the operator reads has a value it cannot use."""


@dataclass(frozen=True)
class Settings:
    harness: HarnessDefaults
    sandbox: SandboxDefaults
    release_seconds: float
    """How long a waiting parent keeps its sandbox before it is released."""
    model_endpoints: tuple[Endpoint, ...] = ()
    """Where an Agent's model key may be sent (its ``baseURL``); unset means the Anthropic API."""


def _quantity(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip()
    if not _QUANTITY.match(value):
        raise SettingsError(f"{name}={value!r} is not a Kubernetes quantity (such as 512Mi or 1)")
    return value


def _resources(env: Mapping[str, str], name: str) -> dict[str, str] | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        found = json.loads(raw)
    except ValueError as err:
        raise SettingsError(f"{name} is not JSON: {err}") from err
    if not isinstance(found, dict):
        raise SettingsError(f'{name} must be a JSON object such as {{"memory": "1Gi"}}')
    resources: dict[str, str] = {}
    for key, value in found.items():
        if key not in _RESOURCES:
            raise SettingsError(f"{name}: {key!r} is not one of {', '.join(_RESOURCES)}")
        resources[key] = _quantity({name: str(value)}, name, "")
    return resources


def _number(env: Mapping[str, str], name: str, default: str) -> float:
    value = env.get(name, default)
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number < 0:
        raise SettingsError(f"{name}={value!r} is not a number of seconds (0 or more)")
    return number


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "false").strip().lower()
    if value not in ("true", "false"):
        raise SettingsError(f"{name}={value!r} is not true or false")
    return value == "true"


def _ports(env: Mapping[str, str], name: str, default: str) -> tuple[int, ...]:
    raw = env.get(name, default)
    try:
        ports = tuple(int(p) for p in raw.split(",") if p.strip())
    except ValueError:
        ports = ()
    if not ports or any(not 0 < p < 65536 for p in ports):
        raise SettingsError(f"{name}={raw!r} is not a comma-separated list of ports")
    return ports


def _peers(env: Mapping[str, str], name: str) -> tuple[dict[str, object], ...]:
    raw = env.get(name, "").strip()
    if not raw:
        return ()
    try:
        found = json.loads(raw)
    except ValueError as err:
        raise SettingsError(f"{name} is not JSON: {err}") from err
    if not isinstance(found, list) or not all(isinstance(p, dict) for p in found):
        raise SettingsError(f"{name} must be a JSON list of NetworkPolicy peers")
    return tuple(found)


def _otlp(env: Mapping[str, str]) -> str:
    url = env.get(OTLP_ENDPOINT_ENV, "")
    if url and urlsplit(url).scheme not in ("http", "https"):
        raise SettingsError(f"{OTLP_ENDPOINT_ENV}={url!r} is not an http(s) URL")
    return url


def from_env(env: Mapping[str, str]) -> Settings:
    """The operator's defaults: images, sandbox limits and sizes, harness resources."""
    try:
        endpoints = parse_endpoints(env.get(MODEL_ENDPOINTS_ENV) or DEFAULT_ENDPOINTS)
    except ValueError as err:
        raise SettingsError(str(err)) from err
    ports = [e.port for e in endpoints]
    model_ports = None if None in ports else tuple(sorted({p for p in ports if p is not None}))
    harness = HarnessDefaults(
        image=env.get("CADRE_HARNESS_IMAGE", f"ghcr.io/cadre-dev/cadre:{__version__}"),
        state_size=_quantity(env, "CADRE_HARNESS_STATE_SIZE", "1Gi"),
        requests=_resources(env, "CADRE_HARNESS_REQUESTS"),
        limits=_resources(env, "CADRE_HARNESS_LIMITS"),
        user_namespaces=_flag(env, "CADRE_USER_NAMESPACES"),
        api_server_ports=_ports(env, "CADRE_API_SERVER_PORTS", "443,6443"),
        model_ports=model_ports,
        events_from=_peers(env, "CADRE_HARNESS_EVENTS_FROM"),
        otlp_endpoint=_otlp(env),
    )
    sandbox_limits = _resources(env, "CADRE_SANDBOX_LIMITS")
    base = SandboxDefaults(
        image=env.get("CADRE_SANDBOX_IMAGE", f"ghcr.io/cadre-dev/sandbox:{__version__}")
    )
    sandbox = SandboxDefaults(
        image=base.image,
        limits={**base.limits, **(sandbox_limits or {})},
        tmp_size=_quantity(env, "CADRE_SANDBOX_TMP_SIZE", base.tmp_size),
        user_namespaces=harness.user_namespaces,
    )
    return Settings(
        harness, sandbox, _number(env, "CADRE_SANDBOX_RELEASE_SECONDS", "10"), endpoints
    )
