"""Running the console: ``cadre console`` in the foreground, or beside ``cadre demo`` on a
thread of its own (``start_in_thread``). Either way its watches, its server and its client
session end together."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from aiohttp import web

from cadre.cli.console.kubeapi import CLOSING_TURNS, KubeApi, load_configuration
from cadre.cli.console.server import Console, ConsoleSettings
from cadre.cli.console.store import Store
from cadre.cli.console.watcher import start_watches


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def local_hosts(host: str, port: int) -> frozenset[str]:
    """The ``Host`` values a loopback console answers: itself, under its loopback names."""
    return frozenset(f"{name}:{port}" for name in {host, "localhost", "127.0.0.1", "[::1]"})


async def serve(
    kubeconfig: Path | None, context: str | None, settings: ConsoleSettings, host: str,
    port: int, started: Callable[[str], None], stop: asyncio.Event,
) -> None:  # fmt: skip
    """Serve until ``stop`` is set; ``started`` gets the console's URL once it listens."""
    configuration = await asyncio.to_thread(load_configuration, kubeconfig, context)
    api = KubeApi(configuration)
    store = Store(settings.namespaces)
    watches = start_watches(api, store, settings.namespaces)
    runner: web.AppRunner | None = None
    try:
        console = Console(api, store, settings)
        runner = web.AppRunner(console.app(), access_log=None, shutdown_timeout=1)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1]
        if _loopback(host) and not settings.allowed_hosts:
            console.settings = replace(settings, allowed_hosts=local_hosts(host, bound))
        shown = f"[{host}]" if ":" in host else host
        started(f"http://{shown}:{bound}/")
        await stop.wait()
    finally:
        # Pages first (their live streams end with the store), then the watches, and the
        # client session last: every request to the API server has ended or been cancelled
        # by then, so closing it leaves no connection behind for the garbage collector.
        store.close()
        if runner is not None:
            await runner.cleanup()
        for watch in watches:
            watch.cancel()
        await asyncio.gather(*watches, return_exceptions=True)
        await api.close()


@dataclass
class Running:
    """A console serving on its own thread."""

    url: str
    _loop: asyncio.AbstractEventLoop
    _stop: asyncio.Event
    _thread: threading.Thread

    def stop(self, timeout: float = 60) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)
        if self._thread.is_alive():  # said, not left running with its connections open
            raise RuntimeError(f"the console at {self.url} did not stop within {timeout:.0f} s")


def start_in_thread(
    kubeconfig: Path, settings: ConsoleSettings, host: str = "127.0.0.1", port: int = 0
) -> Running:
    """Start a console on a thread; return once it listens (raise what kept it from it)."""
    loop = asyncio.new_event_loop()
    ready: dict[str, str] = {}
    failed: list[BaseException] = []
    listening = threading.Event()
    stop = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)

        def started(url: str) -> None:
            ready["url"] = url
            listening.set()

        try:
            loop.run_until_complete(serve(kubeconfig, None, settings, host, port, started, stop))
        except BaseException as err:  # handed to the starting thread
            failed.append(err)
        finally:
            listening.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            # A connection aborted in the last steps closes its socket in a callback on the
            # loop's next turn: give it those turns before the loop is closed.
            for _ in range(CLOSING_TURNS):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    thread = threading.Thread(target=run, name="cadre console", daemon=True)
    thread.start()
    listening.wait()
    if failed:
        raise failed[0]
    return Running(ready["url"], loop, stop, thread)
