"""``cadre dev up``: the API server and the process kubelet in one foreground process, and
Cadre's operator beside them (a child process, as it would be a pod's)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

from aiohttp import web

from cadre.api.names import OTLP_ENDPOINT_ENV
from cadre.localcluster.controlplane import LocalApiServer
from cadre.localcluster.node.kubelet import Kubelet
from cadre.localcluster.runner import write_kubeconfig
from cadre.localcluster.scrape import keep_targets


async def _start_operator(
    state_dir: Path, kubeconfig: Path, metrics_port: int, env: dict[str, str]
) -> asyncio.subprocess.Process:
    log = (state_dir / "operator.log").open("ab")
    extra = ["--metrics-port", str(metrics_port)] if metrics_port else []
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cadre.cli.main", "operator", *extra,
            env={**os.environ, "KUBECONFIG": str(kubeconfig), **env},
            stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    finally:
        log.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def run_dev_cluster(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 6443,
    crd_dir: Path | None = None,
    simulate: bool = False,
    allow_unconfined: bool = False,
    operator: bool = True,
    metrics: bool = False,
    traces: bool = False,
) -> None:
    """Start everything, print ``ready``, serve until SIGINT/SIGTERM, then stop every pod.
    ``state_dir`` must be absolute (the CLI resolves it)."""
    began = time.monotonic()
    server = LocalApiServer(host, port, crd_dir=crd_dir)
    await server.start()
    kubelet = Kubelet(
        server, state_dir / "node", simulate=simulate, allow_unconfined=allow_unconfined
    )
    await kubelet.start()
    kubeconfig = state_dir / "kubeconfig"
    write_kubeconfig(kubeconfig, server.kubeconfig())
    metrics_port = _free_port() if metrics and operator else 0
    collector: web.AppRunner | None = None
    operator_env: dict[str, str] = {}
    if traces:
        # Imported only when asked for: protobuf and OpenTelemetry's types take a while to load.
        from cadre.localcluster.traces import TraceCollector

        collector = web.AppRunner(TraceCollector().app(), access_log=None)
        await collector.setup()
        await web.TCPSite(collector, "127.0.0.1", 0).start()
        operator_env[OTLP_ENDPOINT_ENV] = f"http://127.0.0.1:{collector.addresses[0][1]}"
    operator_process = (
        await _start_operator(state_dir, kubeconfig, metrics_port, operator_env)
        if operator else None
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    targets = None
    if metrics:
        operator_at = f"127.0.0.1:{metrics_port}"
        targets = asyncio.create_task(keep_targets(
            server.url, server.ca_pem, server.admin_token, state_dir / "prometheus-targets.json",
            operator_at, stop))  # fmt: skip
    elapsed = time.monotonic() - began
    running = f", operator pid {operator_process.pid}" if operator_process else ", no operator"
    print(
        f"ready in {elapsed:.2f}s: API server {server.url}, kubeconfig {kubeconfig}{running}",
        flush=True,
    )
    if metrics:
        print(f"metrics: operator http://127.0.0.1:{metrics_port}/metrics; every target "
              f"(operator and harnesses) in {state_dir / 'prometheus-targets.json'} "
              "(Prometheus file_sd_configs)", flush=True)  # fmt: skip
    if collector is not None:
        print(f"traces: harnesses send spans to {operator_env[OTLP_ENDPOINT_ENV]}; read them at "
              f"{operator_env[OTLP_ENDPOINT_ENV]}/v1/spans", flush=True)  # fmt: skip
    await stop.wait()
    if targets is not None:
        await targets
    if collector is not None:
        await collector.cleanup()
    if operator_process is not None and operator_process.returncode is None:
        operator_process.terminate()
        try:
            await asyncio.wait_for(operator_process.wait(), 30)
        except TimeoutError:
            operator_process.kill()
            await operator_process.wait()
    await kubelet.stop()
    await server.stop()
    print("stopped", flush=True)
