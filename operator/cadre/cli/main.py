"""Entry point of the ``cadre`` command."""

from __future__ import annotations

from pathlib import Path

import click

from cadre import __version__
from cadre.api.crd import build_all_crds, crd_file_name, render_crd_yaml
from cadre.api.names import (
    API_KEY_ENV,
    HARNESS_EVENTS_PORT,
    HARNESS_STATE_DIR,
    MODEL_BASE_URL_ENV,
    POD_IP_ENV,
    POD_NAMESPACE_ENV,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cadre")
def cli() -> None:
    """Cadre runs AI agents on Kubernetes as an organization: Agents, Teams and Tasks."""


@cli.command()
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write one file per CRD here instead of printing a multi-document stream.",
)
def crds(output_dir: Path | None) -> None:
    """Print (or write) Cadre's CustomResourceDefinitions, generated from the API types.

    \b
    cadre crds | kubectl apply -f -
    """
    rendered = [(crd_file_name(crd), render_crd_yaml(crd)) for crd in build_all_crds()]
    if output_dir is None:
        click.echo("---\n".join(text for _, text in rendered), nl=False)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in rendered:
        (output_dir / name).write_text(text)
        click.echo(f"wrote {output_dir / name}", err=True)


@cli.command()
@click.option("--agent", required=True, help="The Agent this harness works for.")
@click.option(
    "--namespace",
    envvar=POD_NAMESPACE_ENV,
    default="default",
    show_default=True,
    help="Where the Agent and its Tasks live (in a pod: POD_NAMESPACE).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(HARNESS_STATE_DIR),
    show_default=True,
    help="The harness's volume: session logs and the sandbox-token key.",
)
@click.option(
    "--events-port",
    default=HARNESS_EVENTS_PORT,
    show_default=True,
    help="Serve the sessions' events here for `cadre logs` (0: off), on $POD_IP if set.",
)
def harness(agent: str, namespace: str, state_dir: Path, events_port: int) -> None:
    """Run the harness of one Agent: its Tasks as sessions, until SIGTERM.

    The model API key comes from ANTHROPIC_API_KEY (in a pod, from the Agent's Secret).
    """
    import asyncio
    import os
    import signal

    import kubernetes

    from cadre.api.names import bind_host
    from cadre.harness import logs
    from cadre.harness.egress import settings_from_env as egress_from_env
    from cadre.harness.mcp_tools import McpTools, endpoints_from_env
    from cadre.harness.process import HarnessProcess
    from cadre.harness.taskapi import TaskApi
    from cadre.harness.tracing import from_env as tracing_from_env

    logs.configure()
    api_key = os.environ.get(API_KEY_ENV)
    if not api_key:
        raise click.UsageError(f"{API_KEY_ENV} is not set")
    kubernetes.config.load_config()  # type: ignore[no-untyped-call]

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        with kubernetes.client.ApiClient() as client:
            host = bind_host(os.environ.get(POD_IP_ENV))
            address = (host, events_port) if events_port else None
            harness = HarnessProcess(
                agent, TaskApi(client, namespace), state_dir, api_key,
                base_url=os.environ.get(MODEL_BASE_URL_ENV) or None, events_address=address,
                mcp=McpTools(endpoints_from_env(os.environ)),
                tracing=tracing_from_env(os.environ, agent, namespace),
                egress=egress_from_env(os.environ),
            )  # fmt: skip
            await harness.run(stop)

    asyncio.run(main())


@cli.command()
@click.option(
    "--namespace",
    "namespaces",
    multiple=True,
    help="Serve only these namespaces (repeat); default: the whole cluster.",
)
@click.option(
    "--liveness", default=None, help="Liveness endpoint, such as http://0.0.0.0:8081/healthz."
)
@click.option("--metrics-port", default=0, help="Serve Prometheus /metrics on this port (0: off).")
def operator(namespaces: tuple[str, ...], liveness: str | None, metrics_port: int) -> None:
    """Run Cadre's operator (kopf): Agents into harnesses, Tasks into sandboxed sessions."""
    import os
    import threading

    import kopf
    import kubernetes

    from cadre.cli.stopping import run_until_stopped
    from cadre.operator.settings import SettingsError, from_env
    from cadre.operator.state import OperatorState, memo_for

    try:
        # Read once, before anything: a bad value stops the operator before it reconciles.
        settings = from_env(os.environ)
    except SettingsError as err:
        raise click.ClickException(str(err)) from err
    state = OperatorState(settings, metrics_port=metrics_port, namespaces=len(namespaces))
    # Importing them registers the handlers with kopf.
    import cadre.operator.connections
    import cadre.operator.handlers
    import cadre.operator.policy_handlers
    import cadre.operator.sandbox_handlers
    import cadre.operator.stragglers
    import cadre.operator.team_handlers

    cadre.operator.sandbox_handlers.register_release_timer(settings.release_seconds)
    kubernetes.config.load_config()  # type: ignore[no-untyped-call]
    level = os.environ.get("CADRE_LOG_LEVEL", "info")
    if level not in ("debug", "info", "warning"):
        raise click.ClickException(f"CADRE_LOG_LEVEL={level!r} is not debug, info or warning")
    kopf.configure(debug=level == "debug", quiet=level == "warning")
    # kopf names itself after the user (getpass), which an arbitrary uid (OpenShift, or one
    # the image's passwd file does not list) lacks; getpass reads USER first.
    os.environ.setdefault("USER", "cadre")

    def run(stop: threading.Event) -> None:
        kopf.run(
            standalone=True,
            namespaces=list(namespaces),
            clusterwide=not namespaces,
            liveness_endpoint=liveness,
            stop_flag=stop,
            memo=memo_for(state),
        )

    run_until_stopped(run)


@cli.group()
def dev() -> None:
    """The local cluster: Kubernetes on this machine with no container runtime."""


@dev.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=6443, show_default=True, help="Port to listen on (0: any).")
@click.option(
    "--kubeconfig",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".cadre/kubeconfig"),
    show_default=True,
    help="Where to write the kubeconfig (admin token and CA) for kubectl and clients.",
)
@click.option(
    "--crds",
    "crd_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Register every CRD in this folder at start (e.g. crds/).",
)
def apiserver(host: str, port: int, kubeconfig: Path, crd_dir: Path | None) -> None:
    """Run only the local API server, in the foreground, until Ctrl-C.

    \b
    cadre dev apiserver --crds crds/ &
    KUBECONFIG=.cadre/kubeconfig kubectl get tasks
    """
    import asyncio

    from cadre.localcluster.controlplane import LocalApiServer
    from cadre.localcluster.runner import serve_forever

    asyncio.run(serve_forever(LocalApiServer(host, port, crd_dir=crd_dir), kubeconfig))


@dev.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="API server address.")
@click.option("--port", default=6443, show_default=True, help="API server port (0: any).")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".cadre/dev"),
    show_default=True,
    help="Kubeconfig, pod folders and volumes go here.",
)
@click.option(
    "--crds",
    "crd_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Register every CRD in this folder at start (default: crds/ when present).",
)
@click.option("--simulate", is_flag=True, help="Mark pods Running without starting them.")
@click.option(
    "--allow-unconfined",
    is_flag=True,
    help="Run sandboxes of Agents on the real model API even where pods get no namespaces.",
)
@click.option(
    "--no-operator",
    is_flag=True,
    help="Do not start Cadre's operator (run your own, or none).",
)
@click.option(
    "--metrics",
    is_flag=True,
    help="Serve the operator's metrics on loopback and keep a Prometheus file_sd file of "
    "every target (the operator and each harness pod).",
)
@click.option(
    "--traces",
    is_flag=True,
    help="Run an in-memory OTLP receiver and have every harness send it its spans "
    "(read them at its /v1/spans).",
)
def up(
    host: str, port: int, state_dir: Path, crd_dir: Path | None, simulate: bool,
    allow_unconfined: bool, no_operator: bool, metrics: bool, traces: bool,
) -> None:  # fmt: skip
    """Run the local cluster (API server, process kubelet, Cadre's operator) in the foreground.

    Prints a line starting with "ready" once it accepts work; stops every pod on Ctrl-C.
    """
    import asyncio

    from cadre.localcluster.devcluster import run_dev_cluster

    if crd_dir is None and Path("crds").is_dir():
        crd_dir = Path("crds")
    asyncio.run(
        run_dev_cluster(
            state_dir.resolve(),
            host=host,
            port=port,
            crd_dir=crd_dir,
            simulate=simulate,
            allow_unconfined=allow_unconfined,
            operator=not no_operator,
            metrics=metrics,
            traces=traces,
        )
    )


@cli.command()
@click.option(
    "--example",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=Path("examples/demo"),
    show_default=True,
    help="The manifests to apply: Agents, a Team and one Task.",
)
@click.option(
    "--scenario",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=Path("examples/demo/scripted/scenario.yaml"),
    show_default=True,
    help="What the scripted model answers (unused with ANTHROPIC_API_KEY).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".cadre/demo"),
    show_default=True,
    help="The local cluster's files and the logs of every process the demo starts.",
)
@click.option("--namespace", default="default", show_default=True)
@click.option("--timeout", default=600.0, show_default=True, help="Seconds the Task may take.")
def demo(example: Path, scenario: Path, state_dir: Path, namespace: str, timeout: float) -> None:
    """Run a Team of agents on the local cluster, end to end: no cluster, no API key needed.

    Starts the local cluster and the operator, applies the example (a lead, an engineer and a
    reviewer; a Task for the Team), follows it live and prints the delegation tree, the
    highlights and the deliverable. Exits 0 only if the Task succeeded. With ANTHROPIC_API_KEY
    set, the agents use the real model instead of the scripted one.
    """
    import os
    import signal
    import sys

    from cadre.cli.demo import DemoOptions, run_demo
    from cadre.cli.manifests import ManifestError
    from cadre.cli.processes import StartError

    def terminated(signum: int, _frame: object) -> None:
        # CI and `timeout` stop a run with SIGTERM: unwind as Ctrl-C does, so every process the
        # demo started is stopped by its `finally`.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    options = DemoOptions(
        example=example,
        scenario=scenario.resolve(),
        state_dir=state_dir.resolve(),
        namespace=namespace,
        timeout=timeout,
        api_key=os.environ.get(API_KEY_ENV) or None,
    )
    try:
        succeeded = run_demo(options)
    except (ManifestError, StartError) as err:
        raise click.ClickException(str(err)) from err
    sys.exit(0 if succeeded else 1)


def _register() -> None:
    from cadre.cli.commands import COMMANDS

    for command in COMMANDS:
        cli.add_command(command)


_register()


def main() -> None:
    """Run the CLI (also as the kubectl plugin ``kubectl-cadre``)."""
    cli()


if __name__ == "__main__":
    main()
