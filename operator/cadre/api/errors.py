"""Turn pydantic's validation errors into lines that name the field, as kubectl users expect."""

from __future__ import annotations

from pydantic import ValidationError


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("spec", "members", 0, "agent")`` as ``spec.members[0].agent``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


def describe_validation_error(err: ValidationError) -> list[str]:
    """One ``path: message`` line per problem."""
    return [f"{field_path(e['loc'])}: {e['msg']}" for e in err.errors(include_url=False)]
