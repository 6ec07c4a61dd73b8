"""``make test-crowded``: the test suite on a crowded machine, as CI and developers run it.

A second local cluster (``cadre dev up`` with the basic example applied, so harness pods hold
their pod slots) and two busy loops eating CPU run beside ``pytest``; everything started here
is stopped by its PID in a ``finally``. Exit code: pytest's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUSY = "while True: pass"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> int:
    started: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="cadre-crowd-") as folder:
        state = Path(folder)
        log = (state / "dev-up.log").open("wb")
        try:
            cluster = subprocess.Popen(
                [sys.executable, "-m", "cadre.cli.main", "dev", "up", "--port", "0",
                 "--state-dir", str(state / "cluster")],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            started.append(cluster)
            kubeconfig = state / "cluster" / "kubeconfig"
            deadline = time.monotonic() + 60
            while b"ready" not in (state / "dev-up.log").read_bytes():
                if cluster.poll() is not None or time.monotonic() > deadline:
                    print((state / "dev-up.log").read_text(), file=sys.stderr)
                    return 1
                time.sleep(0.2)
            example = str(REPO / "examples" / "basic")
            if shutil.which("kubectl"):  # its harness pods hold pod slots, as a user's would
                subprocess.run(
                    ["kubectl", f"--kubeconfig={kubeconfig}", "apply", "-f", example],
                    check=True, capture_output=True,
                )  # fmt: skip
            started += [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(2)]
            began = time.monotonic()
            code = subprocess.call([sys.executable, "-m", "pytest", *sys.argv[1:]], cwd=REPO)
            print(f"test-crowded: pytest exited {code} after {time.monotonic() - began:.0f}s "
                  "beside a second local cluster and two busy loops")  # fmt: skip
            return code
        finally:
            for process in reversed(started):
                _stop(process)
            log.close()


if __name__ == "__main__":
    os.environ.pop("KUBECONFIG", None)
    sys.exit(main())
