"""How a harness writes its log: one line per event on stdout, which is what ``kubectl logs``,
``cadre run`` and ``cadre demo`` read. Session lines (``[namespace/task] ...``) are written as
they are, so programs can follow a Task by its prefix; warnings and errors name their level
and where they come from."""

from __future__ import annotations

import logging
import sys
from typing import Any

TRANSCRIPT = logging.getLogger("cadre.harness.transcript")
"""What sessions say as they go (model text, tool calls, outcomes), one line each."""


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname} {record.name}: {text}"
        return text


def configure(level: int = logging.INFO) -> None:
    """Send the harness's log lines to stdout (called once, by ``cadre harness``)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The kubernetes client's urllib3 says every retry at WARNING: the harness says it once.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def brief(value: Any, limit: int = 160) -> str:
    """A value on one transcript line, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    text = text.replace("\n", " | ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
