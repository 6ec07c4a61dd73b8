"""The commands people use on a running Cadre: ``run``, ``logs``, ``tree``, ``approve``,
``reject`` and ``memory``. Each is thin: pure pieces (the Task to create, the tree's rows, the
verdict's patch, the memory's entries) and one round of API calls through ``Kube``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from cadre.api.types import Obj
from cadre.cli import approval
from cadre.cli.options import cluster_options, output_option, render
from cadre.cli.tree import render_tree, task_tree


def build_task(prompt: str, agent: str | None, team: str | None, name: str | None) -> Obj:
    """The Task ``cadre run`` creates (pure): named, or ``run-`` and a suffix from the server."""
    if (agent is None) == (team is None):
        raise click.UsageError("give exactly one of --agent and --team")
    if not prompt.strip():
        raise click.UsageError("the prompt is empty")
    metadata: Obj = {"name": name} if name else {"generateName": "run-"}
    assignee = {"agent": agent} if agent else {"team": team}
    return {
        "apiVersion": "cadre.dev/v1alpha1",
        "kind": "Task",
        "metadata": metadata,
        "spec": {"assignee": assignee, "prompt": prompt},
    }


def _say(text: str, style: dict[str, Any]) -> None:
    click.echo(click.style(text, **style) if style else text)


@click.command()
@click.argument("prompt")
@click.option("--agent", default=None, help="The Agent to work it.")
@click.option("--team", default=None, help="The Team to work it (its lead takes it).")
@click.option("--name", default=None, help="The Task's name (default: run-XXXXX).")
@click.option("--no-follow", is_flag=True, help="Create the Task and return at once.")
@click.option("--timeout", default=3600.0, show_default=True, help="Seconds to follow it.")
@cluster_options
def run(
    prompt: str, agent: str | None, team: str | None, name: str | None, no_follow: bool,
    timeout: float, namespace: str, kubeconfig: Path | None, context: str | None,
) -> None:  # fmt: skip
    """Create a Task and follow it live: phase changes, the agents' transcript, the result.

    Exits 0 when it succeeds, 1 when it fails or is cancelled (or with --no-follow, once
    created).
    """
    from cadre.cli.follow import follow_task
    from cadre.cli.session import connected

    task = build_task(prompt, agent, team, name)
    with connected(kubeconfig, context) as kube:
        created = kube.create(task, namespace)
        task_name = created["metadata"]["name"]
        click.echo(f"task/{task_name} created")
        if no_follow:
            return
        finished = follow_task(kube, namespace, task_name, timeout, _say, [])
    status = finished.get("status") or {}
    phase = status.get("phase")
    summary = (status.get("result") or {}).get("summary")
    condition: Obj = next(
        (c for c in status.get("conditions") or [] if c["type"] == "Succeeded"), {}
    )
    click.echo(
        f"\nTask {task_name} {phase}"
        + (f" ({condition['reason']})" if condition.get("reason") else "")
    )
    if summary:
        click.echo(summary)
    elif condition.get("message"):
        click.echo(condition["message"])
    sys.exit(0 if phase == "Succeeded" else 1)


@click.command()
@click.argument("task")
@output_option
@cluster_options
def tree(
    task: str, output: str, namespace: str, kubeconfig: Path | None, context: str | None
) -> None:
    """The delegation tree of TASK: phase, agent, turns, tokens, cost, duration, reviews."""
    from cadre.cli.session import connected

    with connected(kubeconfig, context) as kube:
        kube.get_task(namespace, task)  # a clear "not found" before anything else
        rows = task_tree(kube.list_tasks(namespace), task, datetime.now(UTC))
    data = [
        {"task": r.name, "depth": r.depth, "agent": r.agent, "phase": r.phase, "turns": r.turns,
         "tokens": r.tokens, "costUSD": str(r.cost), "seconds": r.seconds, "reviews": r.reviews}
        for r in rows
    ]  # fmt: skip
    click.echo(render(data, output, lambda: render_tree(rows)))


def _verdict(task: str, approved: bool, feedback: str, namespace: str,
             kubeconfig: Path | None, context: str | None, call: str | None) -> None:  # fmt: skip
    from cadre.cli.session import connected

    with connected(kubeconfig, context) as kube:
        current = kube.get_task(namespace, task)
        try:
            patch = approval.verdict_patch(current, call, approved, feedback)
        except approval.NotAwaitingApprovalError as err:
            raise click.ClickException(str(err)) from err
        kube.patch_task_spec(namespace, task, patch)
    what = f"task/{task} call {call}" if call else f"task/{task}"
    click.echo(f"{what} {'approved' if approved else 'rejected'}")


_CALL = click.option(
    "--call", default=None, metavar="ID",
    help="Answer the tool call ID a Policy asks about (status.pendingToolCalls) instead.",
)  # fmt: skip


@click.command()
@click.argument("task")
@click.option("--feedback", "--reason", default="", help="A note kept with the verdict.")
@_CALL
@cluster_options
def approve(task: str, feedback: str, call: str | None, namespace: str,
            kubeconfig: Path | None, context: str | None) -> None:  # fmt: skip
    """Approve the result of TASK, which waits for a person (spec.review.humanApproval), or
    with --call one of its tool calls a Policy asks about."""
    _verdict(task, True, feedback, namespace, kubeconfig, context, call)


@click.command()
@click.argument("task")
@click.option("--feedback", "--reason", required=True, help="What to change, or why not: the "
              "agent gets it.")  # fmt: skip
@_CALL
@cluster_options
def reject(task: str, feedback: str, call: str | None, namespace: str,
           kubeconfig: Path | None, context: str | None) -> None:  # fmt: skip
    """Send the result of TASK back with feedback (its session continues with it), or with
    --call refuse one of its tool calls (the model is told why)."""
    _verdict(task, False, feedback, namespace, kubeconfig, context, call)


@click.group()
def memory() -> None:
    """An Agent's memory (the ConfigMap memory-AGENT): show it, or clear it."""


def _memory(kube: Any, namespace: str, agent: str) -> tuple[Obj, list[Any]]:
    from cadre.api.names import memory_name
    from cadre.harness.memory import KEY, MemoryUnreadable, parse

    what = f'the memory of Agent "{agent}" (configmap/{memory_name(agent)})'
    config = kube.get_configmap(namespace, memory_name(agent), what)
    try:
        entries = parse((config.get("data") or {}).get(KEY, ""), f"configmap/{memory_name(agent)}")
    except MemoryUnreadable as err:
        raise click.ClickException(str(err)) from err
    return config, entries


@memory.command()
@click.argument("agent")
@output_option
@cluster_options
def show(agent: str, output: str, namespace: str, kubeconfig: Path | None,
         context: str | None) -> None:  # fmt: skip
    """AGENT's memory entries, most used and newest first (as its next prompt gets them)."""
    from dataclasses import asdict

    from cadre.cli.session import connected
    from cadre.harness.memory import ranked

    with connected(kubeconfig, context) as kube:
        _, entries = _memory(kube, namespace, agent)
    ordered = ranked(entries)

    def table() -> str:
        if not ordered:
            return f"Agent {agent} remembers nothing yet."
        return "\n".join(f"{e.uses:>4}  {e.created[:10]:<10}  {e.task or '-':<20}  {e.text}"
                         for e in ordered)  # fmt: skip

    click.echo(render([asdict(e) for e in ordered], output, table))


@memory.command()
@click.argument("agent")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@cluster_options
def clear(agent: str, yes: bool, namespace: str, kubeconfig: Path | None,
          context: str | None) -> None:  # fmt: skip
    """Forget everything AGENT remembers (its next Task starts without it)."""
    from cadre.cli.session import connected
    from cadre.harness.memory import KEY

    with connected(kubeconfig, context) as kube:
        config, entries = _memory(kube, namespace, agent)
        if not yes:
            click.confirm(f"Forget {len(entries)} entries of Agent {agent}?", abort=True)
        kube.replace_configmap_data(namespace, config, {**(config.get("data") or {}), KEY: "[]\n"})
    click.echo(f"memory of Agent {agent} cleared ({len(entries)} entries)")


@click.command()
@click.argument("task")
@click.option("-f", "--follow", is_flag=True, help="Keep printing events until the session ends.")
@click.option("--after", default=0, show_default=True, help="Start after this event seq.")
@click.option("-o", "--output", type=click.Choice(["text", "jsonl"]), default="text",
              show_default=True, help="Readable lines, or the raw events.")  # fmt: skip
@cluster_options
def logs(
    task: str, follow: bool, after: int, output: str, namespace: str, kubeconfig: Path | None,
    context: str | None,
) -> None:  # fmt: skip
    """TASK's session, from its durable log: every event from the start (or after --after),
    then, with -f, the rest as it happens, with no gap and no duplicate. Read from the Agent's
    harness through the API server's pod proxy (RBAC: get on pods/proxy)."""
    import json

    from cadre.api.names import HARNESS_EVENTS_PORT, harness_pod_name
    from cadre.cli.eventtext import describe
    from cadre.cli.kube import ProxyError
    from cadre.cli.session import connected

    with connected(kubeconfig, context) as kube:
        found = kube.get_task(namespace, task)
        agent = (found.get("status") or {}).get("agent") or found["spec"]["assignee"].get("agent")
        if not agent:
            raise click.ClickException(f"Task {task} has no Agent yet (its Team's lead takes it)")
        query = [("after", str(after))] + ([("follow", "true")] if follow else [])
        pod = f"{harness_pod_name(agent)}:{HARNESS_EVENTS_PORT}"
        try:
            for line in kube.proxy_lines(namespace, pod, f"v1/tasks/{task}/events", query):
                if not line.strip():
                    continue
                if output == "jsonl":
                    click.echo(line.decode())
                    continue
                text = describe(json.loads(line))
                if text is not None:
                    click.echo(text)
        except ProxyError as err:
            raise click.ClickException(
                f"the harness of Agent {agent} has no events for Task {task}: {err.message}"
                if err.status == 404
                else f"cannot read the events of Task {task} from pod {pod}: {err}"
            ) from err


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8070, show_default=True, help="Port to listen on (0: any).")
@click.option("-n", "--namespace", "namespaces", multiple=True,
              help="Show only this namespace; repeat for more (default: all).")  # fmt: skip
@click.option("--read-only", is_flag=True, help="Offer no Approve / Reject buttons.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="HOST:PORT",
              help="Host header values served (default on loopback: its own).")  # fmt: skip
@click.option("--kubeconfig", type=click.Path(dir_okay=False, path_type=Path),
              envvar="KUBECONFIG", help="Default: $KUBECONFIG, then ~/.kube/config.")  # fmt: skip
@click.option("--context", default=None, help="The kubeconfig context to use.")
def console(
    host: str, port: int, namespaces: tuple[str, ...], read_only: bool,
    allowed_hosts: tuple[str, ...], kubeconfig: Path | None, context: str | None,
) -> None:  # fmt: skip
    """Serve the web console: the organization, live Task trees, transcripts, approvals,
    memory and spend, read through the Kubernetes API with your own credentials.

    In a pod with no kubeconfig it uses the pod's ServiceAccount (the chart's console).
    """
    import asyncio
    import signal

    from cadre.cli.console.run import serve
    from cadre.cli.console.server import ConsoleSettings

    settings = ConsoleSettings(
        namespaces=namespaces, can_decide=not read_only, allowed_hosts=frozenset(allowed_hosts)
    )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(kubeconfig, context, settings, host, port,
                    lambda url: click.echo(f"console at {url}", err=True), stop)  # fmt: skip

    try:
        asyncio.run(main())
    except OSError as err:
        raise click.ClickException(f"cannot serve the console on {host}:{port}: {err}") from err


COMMANDS = [run, tree, approve, reject, memory, logs, console]
"""Registered on ``cadre``; they import the Kubernetes client only when they run, so
``cadre --help`` and ``cadre crds`` stay quick."""
