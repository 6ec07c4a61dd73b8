"""A real sandbox server process on loopback, started without site-packages (``python -S``)
so every test also shows that it needs nothing beyond the standard library."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-session-token"


@dataclass
class SandboxProcess:
    """A running ``python -m cadre.sandbox`` and a way to call it."""

    workspace: Path
    token: str = TOKEN
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = 0
    prefix: list[str] = field(default_factory=list)
    """Run the server under this command (setpriv, unshare)."""
    python: str = sys.executable
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        env = {
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(REPO / "operator"),
            "CADRE_WORKSPACE": str(self.workspace),
            "CADRE_SANDBOX_HOST": "127.0.0.1",
            "CADRE_SANDBOX_PORT": str(self.port),
            "CADRE_SANDBOX_TOKEN_SHA256": hashlib.sha256(self.token.encode()).hexdigest(),
            **self.extra_env,
        }
        # A file, not a pipe: a pipe nobody reads would block the server once full.
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [*self.prefix, self.python, "-S", "-m", "cadre.sandbox"], env=env, stderr=log
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            serving = [r for r in self.log_records() if r.get("msg") == "serving"]
            if len(serving) > self.starts:
                self.starts += 1
                self.port = serving[-1]["port"]
                return
            assert self.proc.poll() is None, self.log_path.read_text()
            time.sleep(0.01)
        raise AssertionError("the sandbox did not start serving in 15 s")

    @property
    def log_path(self) -> Path:
        return self.workspace.parent / "sandbox.log"

    def log_records(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = TOKEN,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        payload = (
            raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        )
        conn.request(method, path, body=payload, headers=all_headers)
        response = conn.getresponse()
        data = json.loads(response.read() or b"{}")
        conn.close()
        return response.status, data

    def call(self, tool_use_id: str, name: str, **data: Any) -> tuple[int, dict[str, Any]]:
        return self.request(
            "POST", "/v1/tool-calls", {"tool_use_id": tool_use_id, "name": name, "input": data}
        )


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    server = SandboxProcess(workspace)
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.stop(signal.SIGKILL)
