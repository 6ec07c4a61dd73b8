"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.browser import browser
from tests.harness.mcp_server import McpServerProcess, serve_mcp
from tests.harness.webhooks import Webhook, serve_webhook

REPO = Path(__file__).resolve().parent.parent
__all__ = ["browser"]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder."""
    return REPO


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    """A real HTTPS hook webhook with its own CA (tests/harness/webhooks.py)."""
    async with serve_webhook() as served:
        yield served


@pytest.fixture
def mcp_server(tmp_path: Path) -> Iterator[McpServerProcess]:
    """A real MCP server (the ``mcp`` SDK) over HTTPS requiring a bearer token."""
    with serve_mcp(tmp_path) as served:
        yield served
