"""``python -m cadre.harness.standalone``: run one session from (or resume it from) its log,
against a model endpoint and a sandbox given on the command line, then exit.

The per-Agent process (``cadre harness --agent``) runs many of these from the cluster; this
entry point runs exactly one, for debugging a session and for the crash tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import anthropic

from cadre.api.agent import CompactionMode, ContextPolicy
from cadre.api.names import API_KEY_ENV
from cadre.harness.context import plan_for
from cadre.harness.pricing import prices_for
from cadre.harness.sandbox_client import SandboxClient, StaticSandbox
from cadre.harness.session import Session, SessionConfig, SessionLimits
from cadre.harness.sessionlog import SessionLog, SessionLogError


async def run(args: argparse.Namespace) -> int:
    config = SessionConfig(
        task=args.task,
        agent=args.agent,
        role=args.role,
        prompt=args.prompt,
        model=args.model,
        limits=SessionLimits(max_turns=args.max_turns),
        context_plan=plan_for(args.model, ContextPolicy.model_validate({
            "compaction": args.compaction, "windowTokens": args.window_tokens,
            "keepRecentTurns": args.keep_recent_turns,
        })),
        model_patience_seconds=args.model_patience,
    )  # fmt: skip
    try:
        log = SessionLog.open(args.log)
    except SessionLogError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    token = args.sandbox_token_file.read_text().strip()
    sandbox = SandboxClient(StaticSandbox(args.sandbox_url, token))
    client = anthropic.AsyncAnthropic(
        api_key=os.environ[API_KEY_ENV], base_url=args.model_url, max_retries=4
    )
    try:
        outcome = await Session(config, log, client, sandbox, prices_for(args.model)).run()
    finally:
        await sandbox.close()
        await client.close()
        log.close()
    print(json.dumps(outcome), flush=True)
    return 0 if outcome["outcome"] == "Succeeded" else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cadre.harness.standalone")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--model-url", required=True)
    parser.add_argument("--model", default="claude-sonnet-4-6")
    parser.add_argument("--sandbox-url", required=True)
    parser.add_argument("--sandbox-token-file", type=Path, required=True)
    parser.add_argument("--task", default="default/task")
    parser.add_argument("--agent", required=True)
    parser.add_argument("--role", default="Writes code")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-turns", type=int)
    parser.add_argument("--compaction", choices=[m.value for m in CompactionMode], default="Auto")
    parser.add_argument("--window-tokens", type=int, help="the model's context window")
    parser.add_argument("--keep-recent-turns", type=int, default=4)
    parser.add_argument("--model-patience", type=float, default=300.0)
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
