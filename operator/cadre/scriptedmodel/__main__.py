"""``python -m cadre.scriptedmodel --scenario FILE [--port N]``: serve a scenario until SIGTERM.

Prints ``listening on http://HOST:PORT`` once it accepts requests (with ``--port 0`` that is the
port the system picked, so a caller needs no free-port guess)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web

from cadre.scriptedmodel.scenario import Scenario
from cadre.scriptedmodel.server import ScriptedModel


async def serve(model: ScriptedModel, host: str, port: int) -> None:
    runner = web.AppRunner(model.app())
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cadre.scriptedmodel")
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    asyncio.run(serve(ScriptedModel(Scenario.load(args.scenario)), args.host, args.port))


if __name__ == "__main__":
    main()
