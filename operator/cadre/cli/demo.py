"""``cadre demo``: the local cluster, Cadre's operator and a Team of agents doing real work in
sandboxes, end to end, on this machine. The scripted model stands in for the real one unless
ANTHROPIC_API_KEY is set.

Everything runs as it would for a user: ``cadre dev up`` (API server, process kubelet,
operator) and the scripted model are child processes; the manifests are created through the API
server; progress comes from watching Tasks and following the harness pods' logs through the API
server, as ``kubectl get -w`` and ``kubectl logs -f`` would."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from cadre.api.crd import build_all_crds, crd_file_name, render_crd_yaml
from cadre.api.names import MODEL_ENDPOINTS_ENV
from cadre.api.types import Obj
from cadre.cli import highlights
from cadre.cli.console.run import Running, start_in_thread
from cadre.cli.console.server import ConsoleSettings
from cadre.cli.follow import follow_task
from cadre.cli.kube import ApplyError, Kube
from cadre.cli.manifests import (
    api_key_secret,
    describe,
    for_model,
    load_manifests,
    secret_refs,
)
from cadre.cli.processes import Processes
from cadre.cli.tree import render_tree, task_tree
from cadre.localcluster.node.network import NODE_IP, as_seen_by_pods

SCRIPTED_KEY = "sk-scripted-demo"  # the scripted model checks that a key is sent, not which


@dataclass(frozen=True)
class DemoOptions:
    example: Path
    scenario: Path
    state_dir: Path
    namespace: str
    timeout: float
    api_key: str | None


def _say(text: str, **style: Any) -> None:
    click.echo(click.style(text, **style) if style else text)


def _write_crds(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for crd in build_all_crds():
        (folder / crd_file_name(crd)).write_text(render_crd_yaml(crd))


def _report(kube: Kube, options: DemoOptions, root: Obj, transcript: list[tuple[str, str]]) -> None:
    tasks = kube.list_tasks(options.namespace)
    name = root["metadata"]["name"]
    _say("\nThe delegation tree", bold=True)
    _say(render_tree(task_tree(tasks, name, datetime.now(UTC))))
    _say("\nHighlights", bold=True)
    for line in highlights.select(transcript):
        _say(f"  {line}")
    _say("\nThe deliverable", bold=True)
    status = root.get("status") or {}
    summary = (status.get("result") or {}).get("summary") or "(no result)"
    condition: Obj = next(
        (c for c in status.get("conditions") or [] if c["type"] == "Succeeded"), {}
    )
    _say(f"Task {name}: {status.get('phase')} ({condition.get('reason', '')})")
    _say(summary)
    # The files handed over with the results (status.result.files), as on any cluster.
    for task in tasks:
        for file in ((task.get("status") or {}).get("result") or {}).get("files") or []:
            by = task["metadata"]["name"]
            _say(f"\n--- {file['path']} ({file['sizeBytes']} bytes, delivered by Task {by}) ---",
                 dim=True)  # fmt: skip
            _say(str(file.get("content", "")).rstrip())


def _clear(state_dir: Path) -> None:
    """Remove what an earlier run left (only what the demo itself writes there)."""
    for owned in ("cluster", "crds", "model.log", "cluster.log"):
        target = state_dir / owned
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _start_console(options: DemoOptions) -> Running | None:
    """The web console on the demo's cluster, on a free port, for as long as the demo runs."""
    settings = ConsoleSettings(namespaces=(options.namespace,))
    try:
        console = start_in_thread(options.state_dir / "cluster" / "kubeconfig", settings)
    except OSError as err:  # the demo goes on without it
        _say(f"(the web console did not start: {err})", dim=True)
        return None
    _say(f"web console at {console.url} while the demo runs", fg="cyan")
    return console


def run_demo(options: DemoOptions) -> bool:
    """Run the demo; True when the Task succeeded. Every process started is stopped."""
    objects = load_manifests(options.example)
    tasks = [o for o in objects if o["kind"] == "Task"]
    if len(tasks) != 1:
        raise click.ClickException(f"{options.example}: expected one Task, found {len(tasks)}")
    root = tasks[0]["metadata"]["name"]
    _clear(options.state_dir)
    _write_crds(options.state_dir / "crds")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("KUBECONFIG", None)
    processes = Processes()
    try:
        base_url = None
        if options.api_key is None:
            line = processes.start(
                "the scripted model",
                [sys.executable, "-m", "cadre.scriptedmodel", "--scenario", str(options.scenario),
                 "--port", "0"],
                options.state_dir / "model.log", "listening on ", env=env,
            )  # fmt: skip
            base_url = line.removeprefix("listening on ").strip()
            # The operator (a child of `dev up`) sends keys only to endpoints it allows.
            env[MODEL_ENDPOINTS_ENV] = f"{base_url}, {as_seen_by_pods(base_url, NODE_IP)}"
            _say(f"scripted model at {base_url} (set ANTHROPIC_API_KEY to use the real model)")
        else:
            _say("real model: ANTHROPIC_API_KEY is set (this run costs money)", fg="yellow")
        ready = processes.start(
            "the local cluster",
            [sys.executable, "-m", "cadre.cli.main", "dev", "up", "--port", "0",
             "--state-dir", str(options.state_dir / "cluster"),
             "--crds", str(options.state_dir / "crds")],
            options.state_dir / "cluster.log", "ready", env=env,
        )  # fmt: skip
        _say(f"local cluster {ready}")
        kube = Kube(options.state_dir / "cluster" / "kubeconfig")
        console = _start_console(options)
        try:
            if base_url is not None:
                # The scripted model listens on loopback; pods with a network of their own
                # reach it at their node's address.
                base_url = as_seen_by_pods(base_url, kube.node_address() or "127.0.0.1")
            adapted = for_model(objects, base_url)
            secrets = [
                api_key_secret(secret, key, options.api_key or SCRIPTED_KEY)
                for secret, key in sorted(secret_refs(adapted))
            ]
            for obj in secrets + adapted:
                try:
                    kube.apply(obj, options.namespace)
                except ApplyError as err:
                    raise click.ClickException(f"{describe(obj)} refused: {err}") from err
            _say("applied " + ", ".join(describe(o) for o in adapted))
            transcript: list[tuple[str, str]] = []
            finished = follow_task(
                kube, options.namespace, root, options.timeout,
                lambda text, style: _say(text, **style), transcript,
            )  # fmt: skip
            _report(kube, options, finished, transcript)
        finally:
            kube.close()
            if console is not None:
                console.stop()
        phase = (finished.get("status") or {}).get("phase")
        succeeded = phase == "Succeeded"
        _say(f"\nTask {root} {phase}.", fg="green" if succeeded else "red", bold=True)
        return succeeded
    finally:
        _say(f"stopping the local cluster and the model (logs in {options.state_dir})", dim=True)
        processes.stop_all()
