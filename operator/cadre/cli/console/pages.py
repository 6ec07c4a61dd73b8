"""HTML for the console's pages (pure: a template and what it shows in, text out). Jinja2
escapes every value, so a prompt, a tool input or a memory entry written by a model cannot
inject markup; the pages carry no inline script, and the server's Content-Security-Policy
allows only the console's own script file."""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import Any

import jinja2

from cadre.cli.tree import duration

NAV = (
    ("/", "Organization", "org"),
    ("/tasks", "Tasks", "tasks"),
    ("/waiting", "Waiting for you", "waiting"),
    ("/spend", "Spend", "spend"),
)


def usd(value: Decimal) -> str:
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cadre.cli.console", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, auto_reload=False,
    )  # fmt: skip
    env.globals.update(usd=usd, duration=duration, zero=Decimal(0))
    return env


def page(body: str, *, fragment: bool, **context: Any) -> str:
    """The whole page around ``body`` (a template name), or with ``fragment`` only the part
    that live updates replace."""
    env = environment()
    if fragment:
        return env.get_template(body).render(**context)
    context.setdefault("notice", "")
    context.setdefault("error", "")
    context.setdefault("after", "")
    return env.get_template("layout.html").render(body=body, nav=NAV, **context)
