"""``cadre dev up --metrics``: what a Prometheus on this machine scrapes. The operator serves
its metrics on a loopback port; every harness pod serves its own on its events port at the
pod's address, which the machine reaches directly (pods of the local cluster have addresses on
loopback). The targets are written as a Prometheus file-based service discovery file
(``file_sd_configs``), rewritten as harness pods come and go."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import tempfile
from pathlib import Path

import aiohttp

from cadre.api.names import AGENT_LABEL, COMPONENT_LABEL, HARNESS_EVENTS_PORT
from cadre.api.types import Obj

REFRESH_SECONDS = 5.0


def file_sd(pods: list[Obj], operator: str) -> list[Obj]:
    """Prometheus ``file_sd`` groups: the operator at ``operator`` (host:port), then each
    running harness pod at its address and events port, labelled with its namespace and Agent
    (pure)."""
    groups: list[Obj] = [{"targets": [operator], "labels": {"job": "cadre-operator"}}]
    for pod in sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
        address = (pod.get("status") or {}).get("podIP")
        if not address or (pod.get("status") or {}).get("phase") != "Running":
            continue
        meta = pod["metadata"]
        groups.append({
            "targets": [f"{address}:{HARNESS_EVENTS_PORT}"],
            "labels": {"job": "cadre-harness", "namespace": meta["namespace"],
                       "pod": meta["name"], "agent": meta["labels"].get(AGENT_LABEL, "")},
        })  # fmt: skip
    return groups


def write_atomically(path: Path, text: str) -> None:
    """Prometheus may read the file at any moment: it sees the old one or the new one."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as out:
        out.write(text)
    Path(out.name).replace(path)


async def keep_targets(
    url: str, ca_pem: str, token: str, path: Path, operator: str, stop: asyncio.Event
) -> None:
    """Rewrite ``path`` from the harness pods every few seconds until ``stop`` is set."""
    context = ssl.create_default_context(cadata=ca_pem)
    selector = f"{COMPONENT_LABEL}=harness"
    written = ""
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        while not stop.is_set():
            try:
                async with session.get(f"{url}/api/v1/pods", params={"labelSelector": selector},
                                       ssl=context) as answer:  # fmt: skip
                    pods = (await answer.json()).get("items") or []
                text = json.dumps(file_sd(pods, operator), indent=2) + "\n"
                if text != written:
                    write_atomically(path, text)
                    written = text
            except (aiohttp.ClientError, OSError, ValueError):
                pass  # the next round tries again; the file keeps the last good targets
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), REFRESH_SECONDS)
