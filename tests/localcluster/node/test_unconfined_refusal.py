"""Where the machine gives pods no namespaces, the local cluster refuses to start a sandbox of
an Agent on the real model API (its commands would run unconfined on the user's machine),
unless ``cadre dev up --allow-unconfined``; scripted Agents' sandboxes and other pods run.
Namespaces are made unavailable here by replacing their probe."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cadre.localcluster.node import namespaces, rootfs

from tests.localcluster.conftest import REPO, Http, Served, serving
from tests.localcluster.node.conftest import eventually, pod_status, python_pod

NS = "default"


def _agent(http: Http, name: str, base_url: str | None) -> None:
    spec: dict[str, Any] = {"role": "r", "model": "m", "apiKeySecretRef": {"name": "k"}}
    if base_url:
        spec["baseURL"] = base_url
    body = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name},
            "spec": spec}  # fmt: skip
    assert http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/agents", body).status_code == 201


def _sandbox(http: Http, name: str, agent: str) -> None:
    pod = python_pod(name, "import time; time.sleep(600)", terminationGracePeriodSeconds=1)
    pod["metadata"]["labels"] = {"app.kubernetes.io/component": "sandbox", "cadre.dev/agent": agent}
    assert http("POST", f"/api/v1/namespaces/{NS}/pods", pod).status_code == 201


def _waiting(http: Http, name: str) -> dict[str, Any]:
    statuses = pod_status(http, NS, name).get("containerStatuses") or [{}]
    state: dict[str, Any] = statuses[0].get("state", {})
    return state


@pytest.fixture(params=[False, True], ids=["default", "allow-unconfined"])
def unconfined(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Served, bool]]:
    monkeypatch.setattr(namespaces, "available", lambda: "no user namespaces on this machine")
    monkeypatch.setattr(rootfs, "available", lambda: "no user namespaces on this machine")
    allowed = bool(request.param)
    with serving(tmp_path, crd_dir=REPO / "crds", kubelet_dir=tmp_path / "node",
                 kubelet_options={"allow_unconfined": allowed}) as served:  # fmt: skip
        yield served, allowed


def test_a_real_model_sandbox_waits_unless_allowed(unconfined: tuple[Served, bool]) -> None:
    served, allowed = unconfined
    http = served.http
    _agent(http, "real", None)
    _agent(http, "scripted", "http://127.0.0.1:9")
    _sandbox(http, "sbx-real", "real")
    _sandbox(http, "sbx-scripted", "scripted")
    eventually(lambda: "running" in _waiting(http, "sbx-scripted"), timeout=30)
    if allowed:
        eventually(lambda: "running" in _waiting(http, "sbx-real"), timeout=30)
        return
    waiting = eventually(lambda: _waiting(http, "sbx-real").get("waiting", {}).get("reason")
                         == "Unconfined" and _waiting(http, "sbx-real")["waiting"])  # fmt: skip
    assert "--allow-unconfined" in waiting["message"]
