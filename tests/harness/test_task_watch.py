"""The harness's Task watch survives what API servers do to long watches: connections cut
mid-stream (a restart, a load balancer's idle limit) are followed by a fresh list, and the
harness keeps seeing Tasks. The cut is real: a TCP proxy between the client and the local
API server drops every connection."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from cadre.harness.taskapi import TaskApi
from cadre.localcluster.runner import threaded_apiserver, write_kubeconfig

from tests.localcluster.conftest import REPO, Http

NS = "default"


class CuttableProxy:
    """Forwards TCP to ``target``; ``cut()`` closes every connection it carries."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> int:
        with self.lock:
            cut, self.sockets = self.sockets, []
        for s in cut:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        return len(cut) // 2

    def close(self) -> None:
        self.listener.close()
        self.cut()


@pytest.fixture
def through_proxy(
    tmp_path: Path,
) -> Iterator[tuple[Http, kubernetes.client.ApiClient, CuttableProxy]]:
    with threaded_apiserver(crd_dir=REPO / "crds") as handle:
        server = handle.server
        assert server is not None
        (tmp_path / "ca.crt").write_text(server.ca_pem)
        proxy = CuttableProxy((server.host, server.port))
        config = yaml.safe_load(server.kubeconfig())
        config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        kubeconfig = tmp_path / "kubeconfig"
        write_kubeconfig(kubeconfig, yaml.safe_dump(config))
        client = kubernetes.config.new_client_from_config(str(kubeconfig))
        try:
            yield Http(server.url, tmp_path / "ca.crt", server.admin_token), client, proxy
        finally:
            proxy.close()
            client.close()


def create(http: Http, name: str) -> None:
    task = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
            "spec": {"assignee": {"agent": "engineer"}, "prompt": "p"}}  # fmt: skip
    assert http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{NS}/tasks", task).status_code == 201


def eventually(check: Any, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def test_the_watch_survives_cut_connections_and_sees_every_task(
    through_proxy: tuple[Http, kubernetes.client.ApiClient, CuttableProxy],
) -> None:
    http, client, proxy = through_proxy
    seen: list[tuple[str, str]] = []

    def emit(kind: str, obj: dict[str, Any]) -> None:
        items = obj["items"] if kind == "LIST" else [obj]
        seen.extend((kind, item["metadata"]["name"]) for item in items)
        if kind == "LIST":
            seen.append(("LIST", ""))

    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            TaskApi(client, NS).watch(emit, stop)
        except BaseException as err:  # the test reports it
            failure.append(err)

    watcher = threading.Thread(target=run, daemon=True)
    watcher.start()
    try:
        eventually(lambda: ("LIST", "") in seen)
        create(http, "before")
        eventually(lambda: ("ADDED", "before") in seen)
        for round in range(3):
            assert proxy.cut() >= 1  # the watch's connection, at least
            create(http, f"during-{round}")  # made while the watch is down
            eventually(lambda round=round: any(name == f"during-{round}" for _, name in seen))
        assert watcher.is_alive(), failure
        lists = sum(1 for kind, name in seen if (kind, name) == ("LIST", ""))
        assert lists >= 2  # listed again after a cut: nothing missed while down
        create(http, "after")
        eventually(lambda: ("ADDED", "after") in seen)
    finally:
        stop.set()
    assert not failure


@pytest.fixture
def direct(tmp_path: Path) -> Iterator[tuple[Any, Http, kubernetes.client.ApiClient]]:
    """The local API server (its handle, to inject faults), plain HTTPS to it, and a client."""
    with threaded_apiserver(crd_dir=REPO / "crds") as handle:
        server = handle.server
        assert server is not None
        (tmp_path / "ca.crt").write_text(server.ca_pem)
        kubeconfig = tmp_path / "kubeconfig"
        write_kubeconfig(kubeconfig, server.kubeconfig())
        client = kubernetes.config.new_client_from_config(str(kubeconfig))
        try:
            yield handle, Http(server.url, tmp_path / "ca.crt", server.admin_token), client
        finally:
            client.close()


async def test_reads_and_status_writes_go_through_transient_errors_and_stop_at_real_ones(
    direct: tuple[Any, Http, kubernetes.client.ApiClient],
) -> None:
    """A session must not fail because the API server hiccuped: the harness's reads and status
    writes are tried again through 500, 429 and 503 (injected by the local API server before
    the request does anything); a 404 or a 403 is an answer, not a hiccup, and is raised."""
    handle, http, client = direct
    server = handle.server
    create(http, "t")
    api = TaskApi(client, NS)
    armed = [
        handle.call(server.faults.inject, "get", "tasks", 500, 2),
        handle.call(server.faults.inject, "get", "tasks", 429, 1),
        handle.call(server.faults.inject, "patch", "tasks", 503, 2, "status"),
    ]
    assert (await api.task("t"))["metadata"]["name"] == "t"
    await api.patch_status("t", {"phase": "Running"})
    assert [f.served for f in armed] == [2, 1, 2]
    assert (await api.task("t"))["status"]["phase"] == "Running"
    with pytest.raises(kubernetes.client.ApiException) as missing:
        await api.task("absent")
    assert missing.value.status == 404
    refused = handle.call(server.faults.inject, "get", "tasks", 409, 1)
    with pytest.raises(kubernetes.client.ApiException) as conflict:
        await api.task("t")
    assert conflict.value.status == 409
    assert refused.served == 1
