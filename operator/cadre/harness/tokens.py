"""Sandbox session tokens: derived, never stored in the cluster.

The harness derives a Task's token as HMAC-SHA256(key, task uid), with a key that lives only on
the harness's own volume, so a restarted harness derives the same token and the sandbox (which
holds only its SHA-256) keeps accepting it. Only the digest is published, in the Task's status.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path


def load_or_create_key(path: Path) -> bytes:
    """The harness's token key: created once (owner-only), then read on every start."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "wb") as handle:
        handle.write(secrets.token_bytes(32))
        handle.flush()
        os.fsync(handle.fileno())
    return path.read_bytes()


def session_token(key: bytes, task_uid: str) -> str:
    return hmac.new(key, task_uid.encode(), hashlib.sha256).hexdigest()


def token_digest(token: str) -> str:
    """What the sandbox and the Task's status get: the SHA-256 of the token, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()
