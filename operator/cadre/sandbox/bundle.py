"""Deliverable files: what a delegated Task hands back to its requester with its result.

The harness asks for them (``POST /v1/bundle``) when the session delivers; the requester's
harness then writes them into its own workspace. Text files only, bounded in number and in
bytes, so a delivery fits in the Task's status; whatever is left out is named with the reason,
so the requester knows what it did not get.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cadre.sandbox.protocol import BINARY_SNIFF_BYTES, STATE_DIR_NAME, ToolInputError, check_pattern

MAX_PATTERNS = 16
MAX_FILES = 64
MAX_BUNDLE_BYTES = 1024 * 1024
"""Upper bound a caller may ask for; the harness asks for far less (it fits the Task status)."""


def check_request(body: dict[str, Any]) -> tuple[list[str], int]:
    patterns = body.get("patterns")
    if not isinstance(patterns, list) or not patterns or len(patterns) > MAX_PATTERNS:
        raise ToolInputError(f"patterns: a list of 1 to {MAX_PATTERNS} glob patterns")
    checked = [check_pattern(p, f"patterns[{i}]") for i, p in enumerate(patterns)]
    limit = body.get("max_bytes")
    if type(limit) is not int or not 1 <= limit <= MAX_BUNDLE_BYTES:
        raise ToolInputError(f"max_bytes: an integer from 1 to {MAX_BUNDLE_BYTES}")
    return checked, limit


def bundle(root: Path, patterns: list[str], max_bytes: int) -> dict[str, Any]:
    """The text files matching ``patterns`` (in pattern order, each file once) up to
    ``max_bytes`` in all; ``omitted`` says what was left out and why."""
    files: list[dict[str, Any]] = []
    omitted: list[str] = []
    seen: set[str] = set()
    total = 0
    workspace = root.resolve()
    for pattern in patterns:
        matches = sorted(p for p in root.glob(pattern) if p.is_file())
        matches = [p for p in matches if STATE_DIR_NAME not in p.relative_to(root).parts]
        if not matches:
            omitted.append(f"{pattern}: no file matches")
        for path in matches:
            name = path.relative_to(root).as_posix()
            if name in seen:
                continue
            seen.add(name)
            try:
                why, text = _text_of(path, workspace, max_bytes - total)
            except OSError as err:  # unreadable: left out, named, never a dropped request
                why, text = f"cannot be read: {err.strerror or err}", ""
            if why is None and len(files) == MAX_FILES:
                why = f"more than {MAX_FILES} files"
            if why is not None:
                omitted.append(f"{name}: {why}")
                continue
            size = len(text.encode())
            files.append({"path": name, "sizeBytes": size, "content": text})
            total += size
    return {"files": files, "omitted": omitted}


def _text_of(path: Path, workspace: Path, room: int) -> tuple[str | None, str]:
    """Why a file is left out (None: it is not) and its text."""
    if not path.resolve().is_relative_to(workspace):
        return "a link to outside the workspace", ""
    size = path.stat().st_size
    if size > room:
        return f"{size} bytes, more than the {room} left in the delivery", ""
    raw = path.read_bytes()
    if len(raw) > room:  # it grew since stat
        return f"{len(raw)} bytes, more than the {room} left in the delivery", ""
    if b"\x00" in raw[:BINARY_SNIFF_BYTES]:
        return "binary; only text files are handed over", ""
    try:
        return None, raw.decode()
    except UnicodeDecodeError:
        return "not UTF-8 text; only text files are handed over", ""
