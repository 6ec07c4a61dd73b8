"""The sandbox server's settings, read from the environment the pod provides."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from cadre.sandbox.protocol import (
    DEFAULT_GREP_TIMEOUT_SECONDS,
    DEFAULT_PORT,
    DEFAULT_TOKEN_DIGEST_FILE,
    DEFAULT_WORKSPACE,
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
        )
