"""For these tests the local API server runs with a process kubelet beside it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cadre.localcluster.runner import ThreadedApiServer, threaded_apiserver

from tests.localcluster.conftest import REPO, Http

IMAGE = "ghcr.io/cadre-dev/cadre:test"


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedApiServer]:
    """Overrides the package fixture: a kubelet (restart back-off 0.2 s) runs beside it."""
    node = tmp_path_factory.mktemp("node")
    with threaded_apiserver(
        crd_dir=REPO / "crds", kubelet_dir=node, kubelet_options={"backoff": 0.2}
    ) as handle:
        yield handle


def eventually(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll ``check`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def python_pod(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A pod of Cadre's image running ``python3 -c script``."""
    container = {"name": "main", "image": IMAGE, "command": ["python3", "-c", script]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], **spec},
    }


def pod_status(http: Http, namespace: str, name: str) -> dict[str, Any]:
    response = http("GET", f"/api/v1/namespaces/{namespace}/pods/{name}")
    if response.status_code == 404:
        return {}
    status: dict[str, Any] = response.json().get("status", {})
    return status


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (its children, theirs, ...), from /proc."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            child = int(entry.name)
            found |= {child} | descendants(child)
    return found


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
