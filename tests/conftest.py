"""Fixtures shared by every test folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.harness.webhooks import Webhook, serve_webhook

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder."""
    return REPO


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    """A real HTTPS hook webhook with its own CA (tests/harness/webhooks.py)."""
    async with serve_webhook() as served:
        yield served
