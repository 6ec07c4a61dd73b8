"""``cadre dev up``: the API server and the process kubelet in one foreground process."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

from cadre.localcluster.kubelet import Kubelet
from cadre.localcluster.runner import write_kubeconfig
from cadre.localcluster.server import LocalApiServer


async def run_dev_cluster(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 6443,
    crd_dir: Path | None = None,
    simulate: bool = False,
) -> None:
    """Start everything, print ``ready``, serve until SIGINT/SIGTERM, then stop every pod."""
    began = time.monotonic()
    server = LocalApiServer(host, port, crd_dir=crd_dir)
    await server.start()
    kubelet = Kubelet(server, state_dir / "node", simulate=simulate)
    await kubelet.start()
    kubeconfig = state_dir / "kubeconfig"
    write_kubeconfig(kubeconfig, server.kubeconfig())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    elapsed = time.monotonic() - began
    print(f"ready in {elapsed:.2f}s: API server {server.url}, kubeconfig {kubeconfig}", flush=True)
    await stop.wait()
    await kubelet.stop()
    await server.stop()
    print("stopped", flush=True)
