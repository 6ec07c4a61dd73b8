"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.browser import browser
from tests.harness.mcp_server import McpServerProcess, serve_mcp
from tests.harness.webhooks import Webhook, serve_webhook

REPO = Path(__file__).resolve().parent.parent
__all__ = ["browser"]
_OWN_TEMP_ROOT = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """This session's temporary folders under a root of its own. The local cluster's pods run
    as other users and must traverse the folders above their node's state (the kubelet adds
    search permission to them), but every pytest session resets /tmp/pytest-of-<user> to 0700
    and prunes sessions it takes for old ones: a second session started beside this one (one
    test file run during ``make test``) would lock this session's pods out of their files.
    xdist's workers inherit the variable, and so the root."""
    if "PYTEST_DEBUG_TEMPROOT" in os.environ or config.option.basetemp:
        return
    root = Path(tempfile.mkdtemp(prefix="cadre-tests-"))
    os.environ["PYTEST_DEBUG_TEMPROOT"] = str(root)
    config.stash[_OWN_TEMP_ROOT] = root


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The root goes when every test passed; after a failure it stays, for a look inside."""
    root = session.config.stash.get(_OWN_TEMP_ROOT, None)
    if root is None:
        return
    if exitstatus == 0:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"\ntemporary folders of this run kept in {root}")


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
