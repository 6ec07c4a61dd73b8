"""Running the local API server: in the foreground (``cadre dev apiserver``) or on a
background thread with its own event loop (test fixtures, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from cadre.localcluster.controlplane import LocalApiServer
from cadre.localcluster.node.kubelet import Kubelet


class ThreadedApiServer:
    """A ``LocalApiServer`` on its own thread; ``call`` runs a function on its loop. With
    ``kubelet_dir``, a process kubelet runs beside it (``kubelet_options`` go to it)."""

    def __init__(
        self,
        kubelet_dir: Path | None = None,
        kubelet_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        self._options = options
        self._kubelet_dir = kubelet_dir
        self._kubelet_options = kubelet_options or {}
        self.kubelet: Kubelet | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="local-apiserver", daemon=True
        )
        self.server: LocalApiServer | None = None

    def start(self) -> LocalApiServer:
        self._thread.start()
        self.server = self._run(self._start())
        return self.server

    async def _start(self) -> LocalApiServer:
        server = LocalApiServer(**self._options)
        await server.start()
        if self._kubelet_dir is not None:
            self.kubelet = Kubelet(server, self._kubelet_dir, **self._kubelet_options)
            await self.kubelet.start()
        return server

    def _run(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout=60)

    def call(self, function: Any, *args: Any) -> Any:
        """Run ``function(*args)`` on the server's loop (the store is not thread-safe)."""

        async def run() -> Any:
            return function(*args)

        return self._run(run())

    def stop(self) -> None:
        if self.kubelet is not None:
            self._run(self.kubelet.stop())
        if self.server is not None:
            self._run(self.server.stop())
        self._run(_settle())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


async def _settle() -> None:
    """Let closing TLS connections finish their shutdown before the loop goes away."""
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.sleep(0.1)


@contextlib.contextmanager
def threaded_apiserver(**options: Any) -> Iterator[ThreadedApiServer]:
    handle = ThreadedApiServer(**options)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


def write_kubeconfig(path: Path, text: str) -> None:
    """Write a kubeconfig readable by its owner only: it holds the admin token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)


async def serve_forever(server: LocalApiServer, kubeconfig: Path) -> None:
    """Start, write the kubeconfig, and serve until SIGINT or SIGTERM."""
    await server.start()
    write_kubeconfig(kubeconfig, server.kubeconfig())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"Local API server at {server.url}; kubeconfig written to {kubeconfig}", flush=True)
    await stop.wait()
    await server.stop()
