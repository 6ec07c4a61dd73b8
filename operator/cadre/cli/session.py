"""How the user-facing commands reach a cluster: the errors anyone can meet (no kubeconfig, no
cluster, no such object, a refusal) turned into one clear line and exit code 1."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click
import urllib3
from kubernetes.config import ConfigException

from cadre.cli.kube import ApplyError, Kube, NotFoundError


def _unreachable(host: str, err: urllib3.exceptions.HTTPError) -> click.ClickException:
    reason = getattr(err, "reason", None) or err
    return click.ClickException(f"cannot reach the cluster at {host}: {reason}")


@contextlib.contextmanager
def connected(kubeconfig: Path | None, context: str | None) -> Iterator[Kube]:
    """A client for the cluster; any failure to reach it or a refusal is a ClickException."""
    where = kubeconfig or "$KUBECONFIG or ~/.kube/config"
    try:
        kube = Kube(kubeconfig, context)  # discovery: the first request
    except (ConfigException, OSError) as err:
        raise click.ClickException(f"no usable kubeconfig ({where}): {err}") from err
    except urllib3.exceptions.HTTPError as err:
        host = getattr(getattr(err, "pool", None), "host", None)
        port = getattr(getattr(err, "pool", None), "port", None)
        raise _unreachable(f"https://{host}:{port}" if host else str(where), err) from err
    try:
        yield kube
    except urllib3.exceptions.HTTPError as err:
        raise _unreachable(kube.host, err) from err
    except (NotFoundError, ApplyError) as err:
        raise click.ClickException(str(err)) from err
    finally:
        kube.close()
