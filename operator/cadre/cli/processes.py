"""The processes ``cadre demo`` starts: each with its output in a log file, waited for until it
prints that it is ready, and always stopped (SIGTERM, then SIGKILL) however the demo ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class StartError(Exception):
    """A process exited or stayed silent before it was ready; the message quotes its log."""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Processes:
    """Children started in their own process group, so stopping one stops what it started
    even if it cannot clean up after itself."""

    started: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(
        self, name: str, argv: list[str], log: Path, ready: str, *, env: dict[str, str],
        within: float = 60.0,
    ) -> str:  # fmt: skip
        """Start ``argv``; return the first line of its log that starts with ``ready``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as output:
            proc = subprocess.Popen(
                argv, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self.started.append((name, proc))
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith(ready):
                    return line
            if proc.poll() is not None:
                raise StartError(f"{name} exited ({proc.returncode}) before it was ready:\n"
                                 f"{_tail(log)}")  # fmt: skip
            time.sleep(0.05)
        raise StartError(f"{name} was not ready within {within:.0f}s:\n{_tail(log)}")

    def stop_all(self, grace: float = 30.0) -> None:
        """Stop in reverse order of start: SIGTERM to the process (it stops its own children),
        then SIGKILL to its whole group if it is still there after ``grace`` seconds."""
        while self.started:
            _, proc = self.started.pop()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # anything it left behind
