"""The scripted model on the test's event loop, and a real sandbox server process."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from aiohttp import web
from cadre.harness.pricing import prices_for
from cadre.harness.sandbox_client import SandboxClient, StaticSandbox
from cadre.harness.session import LESSON_REQUEST, Session, SessionConfig
from cadre.harness.sessionlog import SessionLog
from cadre.scriptedmodel.scenario import Scenario
from cadre.scriptedmodel.server import ScriptedModel

from tests.sandbox.conftest import SandboxProcess

ModelFactory = Callable[[dict[str, Any]], Awaitable[tuple[str, ScriptedModel]]]


@pytest.fixture
async def scripted() -> AsyncIterator[ModelFactory]:
    runners: list[web.AppRunner] = []

    async def start(scenario: dict[str, Any]) -> tuple[str, ScriptedModel]:
        model = ScriptedModel(Scenario.model_validate(scenario))
        runner = web.AppRunner(model.app(), access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}", model

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    process = SandboxProcess(workspace)
    process.start()
    yield process
    process.stop()


def sandbox_client(sandbox: SandboxProcess) -> SandboxClient:
    return SandboxClient(
        StaticSandbox(f"http://127.0.0.1:{sandbox.port}", sandbox.token), retry_for=10
    )


async def run_session(
    url: str, sandbox: SandboxProcess, log_path: Path, config: SessionConfig, retries: int = 3
) -> tuple[dict[str, Any], SessionLog]:
    client = anthropic.AsyncAnthropic(api_key="sk-test", base_url=url, max_retries=retries)
    tools = sandbox_client(sandbox)
    log = SessionLog.open(log_path)
    lines: list[str] = []
    try:
        outcome = await Session(
            config, log, client, tools, prices_for(config.model), lines.append
        ).run()
    finally:
        await tools.close()
        await client.close()
        log.close()
    return outcome, log


def unmarked(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages without their cache breakpoints (which move to each request's last block)."""
    plain = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = [{k: v for k, v in b.items() if k != "cache_control"} for b in content]
            if len(content) == 1 and content[0]["type"] == "text" and message["role"] == "user":
                content = content[0]["text"]
        plain.append({**message, "content": content})
    return plain


def work_requests(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The model requests of the sessions' work: without the end-of-Task lesson requests."""
    return [r for r in requests if r["messages"][-1]["content"] != LESSON_REQUEST]


def lesson_requests(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in requests if r["messages"][-1]["content"] == LESSON_REQUEST]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def until(check: Callable[[], Any], within: float = 60.0) -> Any:
    """Poll a blocking ``check`` (on a thread) until it returns something truthy; return it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await asyncio.to_thread(check)
        if value:
            return value
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)
