"""The whole system in the local cluster: the operator, harness and sandbox pods as real
processes, and the scripted model. The fixtures are the operator tests'; this module adds the
ways the system tests reach into the node (a pod's process, its workspace claim)."""

from __future__ import annotations

from pathlib import Path

from cadre.localcluster.node.kubelet import Kubelet
from cadre.localcluster.runner import ThreadedApiServer

from tests.harness.conftest import scripted
from tests.operator.conftest import cluster, operator

__all__ = ["claim_dir", "cluster", "operator", "pid_of", "scripted"]


def pid_of(handle: ThreadedApiServer, pod: str, container: int = 0) -> int | None:
    """The host pid of a pod's running container, as its kubelet started it (None if not
    running). Read across threads; a pid is an int and the worse case is a stale one, which
    the caller's kill then misses and its assertions report."""
    kubelet = handle.kubelet
    assert isinstance(kubelet, Kubelet)
    for worker in list(kubelet.workers.values()):
        if worker.pod["metadata"]["name"] == pod and worker.stopping is None:
            process = worker.containers[container].process
            if process is not None and process.returncode is None:
                return process.pid
    return None


def claim_dir(handle: ThreadedApiServer, namespace: str, claim: str) -> Path:
    """The folder backing a bound PersistentVolumeClaim on the node (one per claim uid)."""
    kubelet = handle.kubelet
    assert isinstance(kubelet, Kubelet)
    (found,) = (kubelet.state_dir / "claims" / namespace).glob(f"{claim}-*")
    return found
