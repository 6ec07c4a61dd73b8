"""The grep tool's search, run by the server in a child process of its own.

Python's ``re`` matches in C without releasing the GIL, so a pattern that backtracks
catastrophically (``(a+)+$`` against a long line of ``a``) would freeze every thread of the
server: other calls, ``/healthz`` and even the SIGTERM handler. In a child process it costs at
most its call's time limit, after which the server kills it (``tools.Workspace.tool_grep``).

The child reads ``{"root": ..., "input": ...}`` on stdin and writes the result's JSON, or
``{"error": {...}}`` for input found wrong only while searching, on stdout. Standard library
only, started with ``python -S``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from cadre.sandbox.protocol import BINARY_SNIFF_BYTES, STATE_DIR_NAME, ToolInputError, ToolResult

LINE_CHARS = 500
"""A matching line is shown up to this many characters."""


def compile_pattern(data: dict[str, Any]) -> re.Pattern[str]:
    """The call's regular expression; a bad one is the caller's error (checked in the server,
    before any process starts)."""
    flags = re.IGNORECASE if data.get("case_insensitive") else 0
    try:
        return re.compile(data["pattern"], flags)
    except re.error as err:
        raise ToolInputError(f"input.pattern: invalid regular expression: {err}") from err
    except RecursionError as err:  # deeply nested groups
        raise ToolInputError("input.pattern: nested too deeply") from err


def search(root: Path, start: Path, data: dict[str, Any]) -> ToolResult:
    """Lines matching ``data["pattern"]`` under ``start`` (a file or a folder), shown relative
    to ``root``; files that cannot be read or are binary are skipped."""
    regex = compile_pattern(data)
    limit = data.get("max_results", 200)
    try:
        files = [start] if start.is_file() else sorted(start.glob(data.get("glob", "**/*")))
    except (ValueError, NotImplementedError) as err:
        raise ToolInputError(f"input.glob: {err}") from err
    hits: list[str] = []
    total = 0
    for path in files:
        if STATE_DIR_NAME in path.parts:
            continue
        try:
            if not path.is_file():
                continue
            raw = path.read_bytes()
        except OSError:
            continue
        if b"\x00" in raw[:BINARY_SNIFF_BYTES]:
            continue
        for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
            if regex.search(line):
                total += 1
                if len(hits) < limit:
                    hits.append(f"{display(path, root)}:{number}:{line[:LINE_CHARS]}")
    if total > limit:
        hits.append(
            f"[{total - limit} more matches not shown; narrow the pattern or raise max_results]"
        )
    return ToolResult("\n".join(hits) or "no matches", details={"matches": total})


def display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def main() -> int:
    request = json.loads(sys.stdin.buffer.read())
    root, data = Path(request["root"]), request["input"]
    start = Path(request["start"])
    try:
        reply = search(root, start, data).to_json()
    except ToolInputError as err:
        reply = {"error": {"status": err.status, "type": err.kind, "message": str(err)}}
    sys.stdout.write(json.dumps(reply))
    return 0


if __name__ == "__main__":
    sys.exit(main())
