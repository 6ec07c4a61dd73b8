"""What the sandbox's tools do; their schemas and input checks are in ``protocol``.

Problems with the input (wrong types, a path that does not exist, an edit that does not match)
raise :class:`ToolInputError`, which the server answers with a 4xx that names the problem;
nothing has run then. A command that runs and fails is a result, not an error.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cadre.sandbox.grep import compile_pattern, display
from cadre.sandbox.protocol import (
    BINARY_SNIFF_BYTES,
    DEFAULT_GREP_TIMEOUT_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    MAX_MATCHES,
    MAX_OUTPUT_CHARS,
    MAX_READ_BYTES,
    MAX_WRITE_BYTES,
    STATE_DIR_NAME,
    ToolInputError,
    ToolResult,
    check_input,
)

# --- implementations --------------------------------------------------------------------------


def _cap(text: str, limit: int = MAX_OUTPUT_CHARS) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    dropped = len(text) - limit
    head = text[: limit // 2]
    tail = text[-limit // 2 :]
    return f"{head}\n[... {dropped} characters truncated ...]\n{tail}", True


def _read_all(fd: int) -> bytes:
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0) if size else b""


class Workspace:
    """The tools, bound to one workspace folder."""

    def __init__(self, root: Path, grep_timeout: float = DEFAULT_GREP_TIMEOUT_SECONDS) -> None:
        self.root = root.resolve()
        self.grep_timeout = grep_timeout
        # The grep child runs without site-packages, like the server: it finds Cadre where
        # this process found it.
        package_root = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        self._child_env = {
            **os.environ,
            "PYTHONPATH": package_root + (os.pathsep + path if path else ""),
        }
        # Found once: a lookup through $PATH per call costs a failed exec per earlier entry.
        self.bash = shutil.which("bash") or "bash"

    def resolve(self, path: str, field: str = "path") -> Path:
        """Paths are relative to the workspace; absolute paths are taken as they are (the bash
        tool can reach them anyway, so refusing them would protect nothing)."""
        if "\x00" in path:
            raise ToolInputError(f"input.{field}: contains a NUL byte")
        candidate = Path(path)
        return candidate if candidate.is_absolute() else self.root / candidate

    def _existing_file(self, path: str) -> Path:
        target = self.resolve(path)
        if not target.exists():
            raise ToolInputError(f"input.path: no such file: {path}", 422, "not_found")
        if target.is_dir():
            raise ToolInputError(f"input.path: is a directory: {path}", 422, "is_directory")
        return target

    def run(
        self, tool: str, data: dict[str, Any], environment: dict[str, str] | None = None
    ) -> ToolResult:
        """Run one tool call after validating its input (``environment``: variables the
        harness sets for this call's commands, its egress proxy's)."""
        check_input(tool, data)
        if tool == "bash":
            return self.tool_bash(data, environment)
        handler: Callable[[dict[str, Any]], ToolResult] = getattr(self, f"tool_{tool}")
        return handler(data)

    def tool_bash(
        self, data: dict[str, Any], environment: dict[str, str] | None = None
    ) -> ToolResult:
        timeout = data.get("timeout", DEFAULT_TIMEOUT_SECONDS)
        started = time.monotonic()
        # Output goes to in-memory files, not pipes: the server then only waits for bash to
        # exit (no poll loop copying pipes), and a background process that keeps its output
        # open cannot hold the call once bash has exited.
        out_fd = os.memfd_create("stdout", os.MFD_CLOEXEC)
        err_fd = os.memfd_create("stderr", os.MFD_CLOEXEC)
        try:
            # A session of its own, so the timeout kills every process the command started.
            proc = subprocess.Popen(
                [self.bash, "-c", data["command"]],
                cwd=self.root,
                env={**os.environ, **environment} if environment else None,
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                start_new_session=True,
            )
            # The shared watchdog kills the group at the deadline, so wait() can block in
            # waitpid: wait(timeout=...) polls with sleeps, and a thread per call costs more
            # than the command it waits for.
            expired = threading.Event()

            def expire() -> None:
                expired.set()
                _kill_group(proc.pid)

            alarm = WATCHDOG.schedule(timeout, expire)
            try:
                proc.wait()
            finally:
                WATCHDOG.cancel(alarm)
                if proc.poll() is None:  # interrupted mid-command: leave nothing running
                    _kill_group(proc.pid)
                    proc.wait()
            out_b, err_b = _read_all(out_fd), _read_all(err_fd)
        finally:
            os.close(out_fd)
            os.close(err_fd)
        timed_out = expired.is_set()
        stdout, cut_out = _cap(out_b.decode("utf-8", "replace"))
        stderr, cut_err = _cap(err_b.decode("utf-8", "replace"))
        code = proc.returncode
        parts = [
            f"exit code: {code}" + (f" (killed after the {timeout}s timeout)" if timed_out else "")
        ]
        if stdout:
            parts.append(f"--- stdout ---\n{stdout}")
        if stderr:
            parts.append(f"--- stderr ---\n{stderr}")
        return ToolResult(
            "\n".join(parts),
            is_error=timed_out or code != 0,
            details={
                "exit_code": code,
                "timed_out": timed_out,
                "stdout_truncated": cut_out,
                "stderr_truncated": cut_err,
                "duration_seconds": round(time.monotonic() - started, 3),
            },
        )

    def tool_read(self, data: dict[str, Any]) -> ToolResult:
        target = self._existing_file(data["path"])
        with target.open("rb") as handle:
            raw = handle.read(MAX_READ_BYTES + 1)
        if b"\x00" in raw[:BINARY_SNIFF_BYTES]:
            raise ToolInputError(
                f"input.path: {data['path']} is a binary file ({target.stat().st_size} bytes); "
                "use bash (xxd, file) to inspect it",
                422,
                "binary_file",
            )
        cut = len(raw) > MAX_READ_BYTES
        lines = raw[:MAX_READ_BYTES].decode("utf-8", "replace").splitlines()
        first = data.get("offset", 1)
        limit = data.get("limit", 2000)
        chosen = lines[first - 1 : first - 1 + limit]
        body = "\n".join(f"{n:6}\t{line}" for n, line in enumerate(chosen, start=first))
        more = first - 1 + limit < len(lines)
        notes = []
        if more:
            notes.append(f"[{len(lines) - (first - 1 + limit)} more lines; use offset]")
        if cut:
            notes.append(f"[file cut at {MAX_READ_BYTES} bytes; use bash to read further]")
        text = "\n".join([body, *notes]) if notes else body
        return ToolResult(
            text, details={"lines": len(chosen), "total_lines": len(lines), "truncated": cut}
        )

    def tool_write(self, data: dict[str, Any]) -> ToolResult:
        content: str = data["content"]
        encoded = content.encode("utf-8")
        if len(encoded) > MAX_WRITE_BYTES:
            raise ToolInputError(f"input.content: larger than {MAX_WRITE_BYTES} bytes", 413)
        target = self.resolve(data["path"])
        if target.is_dir():
            raise ToolInputError(f"input.path: is a directory: {data['path']}", 422, "is_directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, encoded)
        return ToolResult(
            f"wrote {len(encoded)} bytes to {data['path']}", details={"bytes": len(encoded)}
        )

    def tool_edit(self, data: dict[str, Any]) -> ToolResult:
        target = self._existing_file(data["path"])
        text = target.read_text("utf-8")
        old, new = data["old_string"], data["new_string"]
        count = text.count(old)
        if count == 0:
            raise ToolInputError(f"input.old_string: not found in {data['path']}", 422, "no_match")
        if count > 1 and not data.get("replace_all", False):
            raise ToolInputError(
                f"input.old_string: found {count} times in {data['path']}; add context to make "
                "it unique or set replace_all",
                422,
                "not_unique",
            )
        atomic_write(target, text.replace(old, new).encode("utf-8"))
        return ToolResult(
            f"replaced {count} occurrence{'s' if count > 1 else ''} in {data['path']}",
            details={"replacements": count},
        )

    def _base(self, data: dict[str, Any]) -> Path:
        base = self.resolve(data.get("path", "."))
        if not base.is_dir():
            raise ToolInputError(
                f"input.path: no such folder: {data.get('path')}", 422, "not_found"
            )
        return base

    def tool_glob(self, data: dict[str, Any]) -> ToolResult:
        base = self._base(data)
        try:
            found = [p for p in base.glob(data["pattern"]) if p.is_file() and not _hidden_state(p)]
        except (ValueError, NotImplementedError) as err:
            raise ToolInputError(f"input.pattern: {err}") from err
        found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        shown = found[:MAX_MATCHES]
        lines = [display(p, self.root) for p in shown]
        if len(found) > MAX_MATCHES:
            lines.append(f"[{len(found) - MAX_MATCHES} more files not shown]")
        return ToolResult("\n".join(lines) or "no files matched", details={"matches": len(found)})

    def tool_grep(self, data: dict[str, Any]) -> ToolResult:
        compile_pattern(data)  # a bad pattern is answered before any process starts
        start = self.resolve(data.get("path", "."))
        if not start.exists():
            raise ToolInputError(
                f"input.path: no such file or folder: {data.get('path')}", 422, "not_found"
            )
        request = {"root": str(self.root), "start": str(start), "input": data}
        proc = subprocess.Popen(
            [sys.executable, "-S", "-m", "cadre.sandbox.grep"],
            cwd=self.root,
            env=self._child_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(json.dumps(request).encode(), self.grep_timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.communicate()
            return ToolResult(
                f"grep stopped after its {self.grep_timeout:g}s limit: the pattern may backtrack "
                "catastrophically (nested quantifiers such as (a+)+), or the search is too "
                "large; simplify the pattern or narrow path and glob",
                is_error=True,
                details={"matches": 0, "timed_out": True},
            )
        finally:
            if proc.poll() is None:  # interrupted: leave nothing running
                _kill_group(proc.pid)
                proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"grep worker exited {proc.returncode}: {err.decode()[-2000:]}")
        reply = json.loads(out)
        if "error" in reply:
            error = reply["error"]
            raise ToolInputError(error["message"], error["status"], error["type"])
        return ToolResult(reply["content"], reply["is_error"], reply["details"])


_OS_ERROR_HINTS = {
    errno.EACCES: "the sandbox's user may not do this there; the workspace is writable",
    errno.EPERM: "the sandbox's user may not do this there; the workspace is writable",
    errno.EROFS: "a read-only file system; write inside the workspace (or /tmp)",
    errno.ENOSPC: "the volume is full; delete files or write less",
    errno.EDQUOT: "the volume's quota is spent; delete files or write less",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "the path is a folder, not a file",
    errno.ELOOP: "too many symbolic links (a loop?)",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EEXIST: "something else already has that name",
}


def os_error_result(tool: str, data: dict[str, Any], err: OSError) -> ToolResult:
    """What the operating system refused, as a result the model reads and can act on (another
    path, less data): a refusal is the call's outcome, not a fault of the sandbox."""
    code = errno.errorcode.get(err.errno or 0, "OSError")
    strerror = err.strerror or str(err)
    path = data.get("path") if isinstance(data.get("path"), str) else None
    where = f" {path}" if path else ""
    text = f"{tool}{where}: {strerror} ({code})"
    if err.errno in _OS_ERROR_HINTS:
        text += f"; {_OS_ERROR_HINTS[err.errno]}"
    details: dict[str, Any] = {"errno": code}
    if err.filename is not None:
        details["filename"] = str(err.filename)
    return ToolResult(text, is_error=True, details=details)


def _hidden_state(path: Path) -> bool:
    return STATE_DIR_NAME in path.parts


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


class Watchdog:
    """One thread that runs callbacks at their deadlines (bash timeouts), for every call."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cancelled: set[int] = set()
        self._wake = threading.Condition()
        self._ids = 0
        self._thread: threading.Thread | None = None

    def schedule(self, delay: float, callback: Callable[[], None]) -> int:
        with self._wake:
            self._ids += 1
            entry = (time.monotonic() + delay, self._ids, callback)
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
            if self._heap[0] is entry:  # wake the thread only when it must wait less
                self._wake.notify()
            return self._ids

    def cancel(self, alarm: int) -> None:
        with self._wake:
            self._cancelled.add(alarm)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._heap and self._heap[0][1] in self._cancelled:
                    self._cancelled.discard(heapq.heappop(self._heap)[1])
                if not self._heap:
                    self._wake.wait()
                    continue
                when, _, callback = self._heap[0]
                if when > time.monotonic():
                    self._wake.wait(when - time.monotonic())
                    continue
                heapq.heappop(self._heap)
            callback()


WATCHDOG = Watchdog()


def atomic_write(target: Path, data: bytes) -> None:
    """Write to a temporary file and rename it, so a crash never leaves half a file.

    No fsync: the page cache survives the death of this process (SIGKILL, OOM, a container
    restart), which is what this protects against; see docs/sandbox.md for why syncing would
    promise nothing more on power loss."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        # mkstemp makes the file private; keep the old file's mode, or the usual 0644.
        os.chmod(tmp, target.stat().st_mode & 0o7777 if target.exists() else 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
