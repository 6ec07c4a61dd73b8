"""kubectl's options for Cadre's commands (``-n``, ``--kubeconfig``, ``--context``, ``-o``)
and how results print in each output format."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

F = TypeVar("F", bound=Callable[..., Any])


def cluster_options(command: F) -> F:
    """``-n/--namespace``, ``--kubeconfig`` and ``--context``, as kubectl spells them."""
    for option in reversed([
        click.option("-n", "--namespace", default="default", show_default=True,
                     help="The namespace of the Task or Agent."),
        click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
                     envvar="KUBECONFIG", help="Default: $KUBECONFIG, then ~/.kube/config."),
        click.option("--context", default=None, help="The kubeconfig context to use."),
    ]):  # fmt: skip
        command = option(command)
    return command


def output_option(command: F) -> F:
    return click.option(
        "-o", "--output", type=click.Choice(["table", "json", "yaml"]), default="table",
        show_default=True, help="How to print the result.",
    )(command)  # fmt: skip


def render(data: Any, output: str, table: Callable[[], str]) -> str:
    if output == "json":
        return json.dumps(data, indent=2, default=str)
    if output == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip()
    return table()
