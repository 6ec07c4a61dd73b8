"""Entry point of the ``cadre`` command."""

from __future__ import annotations

from pathlib import Path

import click

from cadre import __version__
from cadre.api.crd import build_all_crds, crd_file_name, render_crd_yaml


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

    from cadre.localcluster.runner import serve_forever
    from cadre.localcluster.server import LocalApiServer

    asyncio.run(serve_forever(LocalApiServer(host, port, crd_dir=crd_dir), kubeconfig))


def main() -> None:
    """Run the CLI."""
    cli()
