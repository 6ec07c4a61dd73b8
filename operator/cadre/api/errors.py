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
    """One ``path: message`` line per problem.

    Cross-field rules fail on the object that holds them; their ``subpath`` context (the CEL
    rule's ``fieldPath``) points at the field to blame, as the API server's message does.
    """
    lines = []
    for e in err.errors(include_url=False):
        path = field_path(e["loc"])
        subpath = (e.get("ctx") or {}).get("subpath", "")
        if subpath:
            path = subpath.lstrip(".") if path == "<root>" else path + subpath
        lines.append(f"{path}: {e['msg']}")
    return lines
