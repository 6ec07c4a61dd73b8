"""Typed views of the raw bodies Cadre reads and writes without parsing them into models.

Handlers, watches and the local cluster pass objects around as the JSON the API server sent;
``Obj`` names that shape once. Where code reads or writes known keys of a raw body, a
``TypedDict`` here lets mypy check the spelling against one declaration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict, cast

Obj = dict[str, Any]
"""A Kubernetes object (or any JSON object) as it travels on the wire."""


class SessionFields(TypedDict, total=False):
    """``status.session`` of a Task as written on the wire: the sandbox handshake between the
    harness (which asks for a sandbox) and the operator (which provides it). The parsed model
    is ``cadre.api.task.SessionStatus``; a test checks the two name the same fields."""

    sandboxRequested: bool
    sandboxTokenSHA256: str | None
    sandboxPod: str | None
    sandboxReady: bool
    sandboxAddress: str | None
    attempts: int
    resumes: int
    lastActivityTime: str | None


def session_of(status: Mapping[str, Any] | None) -> SessionFields:
    """``status.session`` of a raw Task status, typed (empty when there is none yet)."""
    return cast(SessionFields, (status or {}).get("session") or {})
