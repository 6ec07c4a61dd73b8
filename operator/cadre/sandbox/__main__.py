"""``python -m cadre.sandbox``: serve one session's tools until SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from cadre.sandbox.config import ConfigError, SandboxConfig, trust_extra_ca
from cadre.sandbox.server import SandboxServer, log


def main() -> int:
    try:
        config = SandboxConfig.from_env()
    except ConfigError as err:
        log("error", "cannot start", error=str(err))
        return 2
    trust_extra_ca(config)
    server = SandboxServer(config)
    host, port = server.server_address[:2]
    log("info", "serving", host=host, port=port, workspace=str(config.workspace))

    def stop(signum: int, _frame: FrameType | None) -> None:
        log("info", "shutting down", signal=signal.Signals(signum).name)
        # shutdown() waits for serve_forever to return, so it cannot run on this thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever(poll_interval=0.2)
    server.server_close()  # joins request threads: in-flight calls finish and are stored
    server.store.close()
    log("info", "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
