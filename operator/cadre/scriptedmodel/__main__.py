"""``python -m cadre.scriptedmodel --scenario FILE [--port N]``: serve a scenario."""

from __future__ import annotations

import argparse
from pathlib import Path

from aiohttp import web

from cadre.scriptedmodel.scenario import Scenario
from cadre.scriptedmodel.server import ScriptedModel


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cadre.scriptedmodel")
    parser.add_argument("--scenario", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    model = ScriptedModel(Scenario.load(args.scenario))
    web.run_app(
        model.app(), host=args.host, port=args.port, print=lambda text: print(text, flush=True)
    )


if __name__ == "__main__":
    main()
