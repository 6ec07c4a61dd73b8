"""``sandbox_tool_overhead_ratio``: ``bash -c true`` through the sandbox server (HTTP on
loopback, keep-alive, journal and result written) against ``subprocess.run`` of the same
command directly; median per call, interleaved in rounds so machine noise hits both alike."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from bench.results import Metric

REPO = Path(__file__).resolve().parent.parent
ROUNDS = 20
CALLS_PER_ROUND = 20
TOKEN = "bench-token"  # noqa: S105 - a throwaway token for a loopback server


def _start_server(workspace: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO / "operator"),
        "CADRE_WORKSPACE": str(workspace),
        "CADRE_SANDBOX_HOST": "127.0.0.1",
        "CADRE_SANDBOX_PORT": "0",
        "CADRE_SANDBOX_TOKEN_SHA256": hashlib.sha256(TOKEN.encode()).hexdigest(),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-S", "-m", "cadre.sandbox"], env=env, stderr=out)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if record.get("msg") == "serving":
                return proc, int(record["port"])
        time.sleep(0.01)
    proc.kill()
    raise RuntimeError(f"sandbox did not start: {log.read_text()}")


def measure() -> list[Metric]:
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Path(tmp) / "workspace"
        workspace.mkdir()
        proc, port = _start_server(workspace, Path(tmp) / "sandbox.log")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
            through: list[float] = []
            direct: list[float] = []
            n = 0
            for _ in range(ROUNDS):
                for _ in range(CALLS_PER_ROUND):
                    n += 1
                    body = json.dumps(
                        {"tool_use_id": f"b{n}", "name": "bash", "input": {"command": "true"}}
                    )
                    started = time.perf_counter()
                    conn.request("POST", "/v1/tool-calls", body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    through.append(time.perf_counter() - started)
                    assert response.status == 200
                for _ in range(CALLS_PER_ROUND):
                    started = time.perf_counter()
                    subprocess.run(["bash", "-c", "true"], check=True)
                    direct.append(time.perf_counter() - started)
            conn.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    calls = ROUNDS * CALLS_PER_ROUND
    ratio = median(through) / median(direct)
    how = f"median of {calls} calls each way, interleaved in {ROUNDS} rounds, one run"
    return [
        Metric(
            "sandbox_tool_overhead_ratio",
            round(ratio, 3),
            "ratio",
            "bash -c true through the sandbox server over loopback HTTP (keep-alive; journal "
            f"and result written, not fsync'd) / subprocess.run of the same command; {how}",
            "<= 1.5",
        ),
        Metric(
            "sandbox_tool_call_ms_p50",
            round(median(through) * 1000, 3),
            "ms",
            f"one bash -c true tool call through the sandbox server; {how}",
        ),
        Metric(
            "direct_bash_true_ms_p50",
            round(median(direct) * 1000, 3),
            "ms",
            f"subprocess.run(['bash', '-c', 'true']) in the benchmark process; {how}",
        ),
    ]
