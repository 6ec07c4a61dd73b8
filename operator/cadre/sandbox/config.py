"""The sandbox server's settings, read from the environment the pod provides."""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from cadre.sandbox.protocol import (
    CA_BUNDLE_VARIABLES,
    DEFAULT_GREP_TIMEOUT_SECONDS,
    DEFAULT_PORT,
    DEFAULT_TOKEN_DIGEST_FILE,
    DEFAULT_WORKSPACE,
    ENV_EXTRA_CA,
    ENV_GREP_TIMEOUT,
    ENV_HOST,
    ENV_PORT,
    ENV_STATE_DIR,
    ENV_TOKEN_SHA256,
    ENV_TOKEN_SHA256_FILE,
    ENV_WORKSPACE,
    STATE_DIR_NAME,
)

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable."""


@dataclass(frozen=True)
class SandboxConfig:
    """Where to listen, where the workspace is, and how to check the bearer token."""

    host: str
    port: int
    workspace: Path
    token_sha256: str
    """SHA-256 of the session's bearer token, hex. The token itself never reaches the pod."""
    state_dir: Path
    grep_timeout_seconds: float = DEFAULT_GREP_TIMEOUT_SECONDS
    """The most one grep may take; a pathological pattern costs no more."""

    extra_ca: Path | None = None
    """A CA certificate the tools trust besides the system's (``CADRE_SANDBOX_EXTRA_CA``)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> SandboxConfig:
        env = dict(os.environ if env is None else env)
        workspace = Path(env.get(ENV_WORKSPACE, DEFAULT_WORKSPACE))
        if not workspace.is_dir():
            raise ConfigError(f"{ENV_WORKSPACE}: {workspace} is not a directory")
        try:
            port = int(env.get(ENV_PORT, DEFAULT_PORT))
        except ValueError as err:
            raise ConfigError(f"{ENV_PORT}: not a number: {err}") from err
        if not 0 <= port <= 65535:
            raise ConfigError(f"{ENV_PORT}: {port} is not a port")
        digest = env.get(ENV_TOKEN_SHA256, "").strip()
        if not digest:
            digest_file = Path(env.get(ENV_TOKEN_SHA256_FILE, DEFAULT_TOKEN_DIGEST_FILE))
            try:
                digest = digest_file.read_text().strip()
            except OSError as err:
                raise ConfigError(
                    f"{ENV_TOKEN_SHA256_FILE}: cannot read {digest_file}: {err.strerror}; "
                    "the sandbox refuses to run without a token to check"
                ) from err
        try:
            grep_timeout = float(env.get(ENV_GREP_TIMEOUT, DEFAULT_GREP_TIMEOUT_SECONDS))
        except ValueError as err:
            raise ConfigError(f"{ENV_GREP_TIMEOUT}: not a number: {err}") from err
        if not 0 < grep_timeout <= 3600:
            raise ConfigError(f"{ENV_GREP_TIMEOUT}: {grep_timeout} is not in (0, 3600] seconds")
        if not _DIGEST.match(digest):
            raise ConfigError("the session token digest must be 64 lower-case hex characters")
        return cls(
            host=env.get(ENV_HOST, "0.0.0.0"),  # noqa: S104 - a pod listens on its IP
            port=port,
            workspace=workspace,
            token_sha256=digest,
            state_dir=Path(env.get(ENV_STATE_DIR, str(workspace / STATE_DIR_NAME))),
            grep_timeout_seconds=grep_timeout,
            extra_ca=Path(env[ENV_EXTRA_CA]) if env.get(ENV_EXTRA_CA) else None,
        )


def _system_bundle() -> bytes:
    """The system's trusted CAs as one PEM file's bytes (empty where none is found)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_bytes()
    return b""


def trust_extra_ca(config: SandboxConfig) -> None:
    """Tools trust the system's CAs and ``extra_ca`` (the Agent's egress CA, whose certificate
    signs what the egress proxy presents for hosts with a credential): one bundle in the state
    folder, named by every variable tools read (``CA_BUNDLE_VARIABLES``)."""
    if config.extra_ca is None:
        return
    try:
        extra = config.extra_ca.read_bytes()
    except OSError as err:
        raise ConfigError(f"{ENV_EXTRA_CA}: cannot read {config.extra_ca}: {err.strerror}") from err
    config.state_dir.mkdir(parents=True, exist_ok=True)
    bundle = config.state_dir / "ca-bundle.pem"
    bundle.write_bytes(_system_bundle().rstrip(b"\n") + b"\n" + extra)
    for name in CA_BUNDLE_VARIABLES:
        os.environ[name] = str(bundle)
