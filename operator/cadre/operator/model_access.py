"""Which Agents may get a harness: the rules that keep a model key from going anywhere else.

Creating an Agent must not be a way to read a Secret. Without these rules an Agent naming any
Secret of its namespace as its key, with ``baseURL`` pointing at a server its author controls,
made the harness send that Secret there as a bearer token. So two independent consents are
required: the Secret's owner labels it as a model key, and the operator's installer lists the
endpoints a key may be sent to. Pure functions; the handlers read the Secret and the settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from cadre.api.meta import SecretKeyReference
from cadre.api.names import MODEL_ENDPOINTS_ENV, MODEL_KEY_LABEL, TOOL_CREDENTIAL_LABEL
from cadre.api.types import Obj

DEFAULT_ENDPOINTS = "https://api.anthropic.com"
_DEFAULT_PORTS = {"http": 80, "https": 443}
REFUSALS = frozenset({
    "EndpointNotAllowed", "SecretMissing", "SecretNotModelKey", "SecretKeyMissing",
    "CredentialSecretMissing", "SecretNotToolCredential", "CredentialKeyMissing",
})  # fmt: skip
"""The Ready reasons of a refused Agent: no harness may run while one holds."""


@dataclass(frozen=True)
class Endpoint:
    """An allowed model endpoint: scheme, host and port exactly (``port`` None: any port), and
    the URL's path at or below ``path``."""

    scheme: str
    host: str
    port: int | None
    path: str

    def __str__(self) -> str:
        port = "*" if self.port is None else str(self.port)
        return f"{self.scheme}://{self.host}:{port}{self.path}"


@dataclass(frozen=True)
class Refusal:
    """Why an Agent gets no harness: ``reason`` is the Ready condition's reason."""

    reason: str
    message: str
    permanent: bool
    """True when only a change of the Agent (or of the operator's settings) can lift it; a
    Secret can be created or labelled at any time, so those refusals are retried."""


def _split(url: str) -> tuple[str, str, int | None, str]:
    """scheme, host, port (None for ``*``), path without a trailing slash; ValueError if the
    URL is not an absolute http(s) URL or carries a user name or password."""
    wildcard = False
    parts = urlsplit(url.strip())
    netloc = parts.netloc
    if netloc.endswith(":*"):
        wildcard = True
        parts = parts._replace(netloc=netloc[:-2])
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("not an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a user name or password in the URL is not allowed")
    if parts.query or parts.fragment:
        raise ValueError("a query or fragment is not allowed")
    port = None if wildcard else (parts.port or _DEFAULT_PORTS[scheme])  # port: ValueError
    return scheme, parts.hostname.lower(), port, parts.path.rstrip("/")


def parse_endpoints(raw: str) -> tuple[Endpoint, ...]:
    """The allow-list from its setting: comma-separated URLs; ``:*`` as the port allows any.
    ValueError names the entry that does not parse."""
    found: list[Endpoint] = []
    for entry in raw.split(","):
        if not entry.strip():
            continue
        try:
            found.append(Endpoint(*_split(entry)))
        except ValueError as err:
            raise ValueError(f"{MODEL_ENDPOINTS_ENV}: {entry.strip()!r}: {err}") from err
    if not found:
        raise ValueError(f"{MODEL_ENDPOINTS_ENV} lists no endpoint")
    return tuple(found)


def endpoint_allowed(url: str, allowed: tuple[Endpoint, ...]) -> bool:
    try:
        scheme, host, port, path = _split(url)
    except ValueError:
        return False
    if port is None:  # ``:*`` is for the allow-list, not for an Agent
        return False
    return any(
        e.scheme == scheme
        and e.host == host
        and e.port in (None, port)
        and (path == e.path or path.startswith(e.path + "/"))
        for e in allowed
    )


def refusal(
    secret: Obj | None, ref: SecretKeyReference, base_url: str | None, allowed: tuple[Endpoint, ...]
) -> Refusal | None:
    """None when the Agent may have a harness; otherwise the first rule it breaks."""
    if base_url is not None and not endpoint_allowed(base_url, allowed):
        listed = ", ".join(str(e) for e in allowed)
        return Refusal(
            "EndpointNotAllowed",
            f'spec.baseURL "{base_url}" is not a model endpoint this operator allows '
            f"(Helm value modelEndpoints, {MODEL_ENDPOINTS_ENV}: {listed})",
            permanent=True,
        )
    if secret is None:
        return Refusal(
            "SecretMissing", f'the Secret "{ref.name}" with the API key does not exist', False
        )
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if labels.get(MODEL_KEY_LABEL) != "true":
        return Refusal(
            "SecretNotModelKey",
            f'the Secret "{ref.name}" is not labelled {MODEL_KEY_LABEL}: "true"; only a Secret '
            "its owner labelled so can be an Agent's model key",
            permanent=False,
        )
    if ref.key not in (secret.get("data") or {}):
        return Refusal("SecretKeyMissing", f'the Secret "{ref.name}" has no key "{ref.key}"', False)
    return None


def credential_refusal(secret: Obj | None, ref: SecretKeyReference, field: str) -> Refusal | None:
    """None when the Secret may be sent to a tool server (an MCP server's credential): its
    owner labelled it ``cadre.dev/tool-credential: "true"``, a consent apart from the model
    key's. ``field`` names the Agent's field that refers to it."""
    if secret is None:
        return Refusal("CredentialSecretMissing",
                       f'{field}: the Secret "{ref.name}" does not exist', False)  # fmt: skip
    labels = (secret.get("metadata") or {}).get("labels") or {}
    if labels.get(TOOL_CREDENTIAL_LABEL) != "true":
        return Refusal(
            "SecretNotToolCredential",
            f'{field}: the Secret "{ref.name}" is not labelled {TOOL_CREDENTIAL_LABEL}: "true"; '
            "only a Secret its owner labelled so can be sent to a tool server",
            permanent=False,
        )
    if ref.key not in (secret.get("data") or {}):
        missing = f'{field}: the Secret "{ref.name}" has no key "{ref.key}"'
        return Refusal("CredentialKeyMissing", missing, False)
    return None
