"""``kopf run`` (the framework Cadre's operator is built on) against the local API server, with
no workaround: it discovers the CRDs, lists and watches with bookmarks, patches status, keeps
its finalizer, and lets go of deleted objects."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.localcluster.conftest import Http, task_manifest

OPERATOR = """
import kopf

@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    settings.persistence.finalizer = "cadre.dev/test-operator"
    settings.watching.server_timeout = 30

@kopf.on.create("cadre.dev", "v1alpha1", "tasks", id="accept")
def accept(patch: kopf.Patch, **_) -> None:
    patch.status["phase"] = "Running"

@kopf.on.delete("cadre.dev", "v1alpha1", "tasks", id="release")
def release(name: str, **_) -> None:
    print(f"released {name}", flush=True)
"""


def _eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


@pytest.fixture
def operator(namespace: str, kubeconfig: Path, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    (tmp_path / "operator.py").write_text(OPERATOR)
    log = (tmp_path / "kopf.log").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kopf",
            "run",
            "--standalone",
            "-n",
            namespace,
            str(tmp_path / "operator.py"),
        ],
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_kopf_handles_create_and_delete(
    http: Http, namespace: str, operator: subprocess.Popen[str], tmp_path: Path
) -> None:
    tasks = f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks"
    http("POST", tasks, task_manifest("handled"))

    def accepted() -> bool:
        task = http("GET", tasks + "/handled").json()
        return task.get("status", {}).get("phase") == "Running"

    _eventually(accepted)
    task = http("GET", tasks + "/handled").json()
    assert task["metadata"]["finalizers"] == ["cadre.dev/test-operator"]
    assert "kopf.zalando.org/last-handled-configuration" in task["metadata"]["annotations"]
    assert http("DELETE", tasks + "/handled").status_code == 202
    _eventually(lambda: http("GET", tasks + "/handled").status_code == 404)
    assert operator.poll() is None
    log = (tmp_path / "kopf.log").read_text()
    assert "released handled" in log
    assert "Traceback" not in log
