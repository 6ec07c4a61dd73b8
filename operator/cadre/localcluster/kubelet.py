"""The process kubelet: runs the pods bound to its node as local processes, reports their
status as a kubelet does, serves their logs, and ends them gracefully.

It also plays the scheduler (binds every unscheduled pod to its one node). It runs on the API
server's event loop and uses the cluster's object layer directly (a real kubelet would use the
API over HTTP; the writes it makes are the same). Isolation is described in
docs/localcluster.md: each pod gets its own loopback address and, when the kubelet runs as
root, its own host user ids (as Kubernetes user namespaces do), so pods cannot read each
other's environment, files or secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cadre.api.types import Obj
from cadre.localcluster import podfs
from cadre.localcluster.images import Image, Runtime, detect_runtime, find_image, pythonpath_env
from cadre.localcluster.metadata import now
from cadre.localcluster.server import LocalApiServer
from cadre.localcluster.status import ApiError
from cadre.localcluster.store import Subscription
from cadre.localcluster.workloads import WorkloadControllers

log = logging.getLogger(__name__)
NODE_NAME = "local"
_UID_BASE = 200_000  # pod slot n maps container uid u to host uid BASE + n*65536 + u
_IP_PREFIX = "127.1"
_PROBE_AGENT = "User-Agent: kube-probe/1.32"


@dataclass
class ContainerState:
    spec: Obj
    image: Image | None
    process: asyncio.subprocess.Process | None = None
    restart_count: int = 0
    started_at: str = ""
    ready: bool = False
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    next_start: float = 0.0
    backoff: float = 0.0
    probe_due: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    done: bool = False
    starting: bool = False
    """A start is in flight: the pod loop ticks faster than a process may take to exec, and
    a container must never run twice at once."""

    @property
    def name(self) -> str:
        return str(self.spec["name"])


def _iso(timestamp: float | None = None) -> str:
    return (
        now()
        if timestamp is None
        else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )


class PodWorker:
    """One pod's life on the node: volumes, processes, probes, restarts, status, ending."""

    def __init__(self, kubelet: Kubelet, pod: Obj, slot: int) -> None:
        self.kubelet = kubelet
        self.pod = pod
        self.slot = slot
        self.ip = f"{_IP_PREFIX}.{slot >> 8}.{slot & 255}"
        self.root = kubelet.state_dir / "pods" / pod["metadata"]["uid"]
        self.containers = [
            ContainerState(c, find_image(c.get("image", "")))
            for c in pod["spec"].get("containers", [])
        ]
        for container in self.containers:
            repository = str(container.spec.get("image", "")).rsplit(":", 1)[0]
            delay = kubelet.start_delay.get(repository, 0.0)
            container.next_start = time.monotonic() + delay if delay else 0.0
        self.stopping: float | None = None  # grace period once deletion started
        self.reason = ""
        self.message = ""
        self.volumes_ready = False
        self.fs: podfs.PodFilesystem | None = None
        self.task: asyncio.Task[None] | None = None
        self._last_status: Obj | None = None
        self._stop_requested = asyncio.Event()

    # -- identity ------------------------------------------------------------------------

    def _user(self, container: Obj) -> tuple[int | None, int | None]:
        """Host uid/gid: the container's runAsUser shifted into this pod's own range."""
        if not self.kubelet.isolate:
            return None, None
        pod_ctx = self.pod["spec"].get("securityContext") or {}
        ctx = container.get("securityContext") or {}
        image = find_image(container.get("image", ""))
        uid = ctx.get("runAsUser", pod_ctx.get("runAsUser", image.user if image else 65534))
        gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup", uid))
        shift = _UID_BASE + self.slot * 65536
        return shift + int(uid) % 65536, shift + int(gid) % 65536

    # -- life ------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            await self._kill_all(0)
            raise
        except Exception:
            log.exception("pod worker failed for %s", self.pod["metadata"]["name"])

    async def _run(self) -> None:
        missing = [c for c in self.containers if c.image is None]
        if missing:
            for container in missing:
                message = (
                    f'image "{container.spec.get("image")}" is not one of Cadre\'s images; the'
                    " local cluster runs only those (ghcr.io/cadre-dev/cadre,"
                    " ghcr.io/cadre-dev/sandbox)"
                )
                container.state = {"waiting": {"reason": "ErrImagePull", "message": message}}
            self._report()
            await self._wait_for_deletion()
            return
        while not self.volumes_ready and self.stopping is None:
            try:
                self._prepare()
                self.volumes_ready = True
            except podfs.VolumeNotReady as err:
                for container in self.containers:
                    container.state = {
                        "waiting": {"reason": "ContainerCreating", "message": str(err)}
                    }
                self._report()
                await asyncio.sleep(1.0)
        while self.stopping is None:
            self._start_due()
            await self._probe_due()
            self._reap()
            self._report()
            if all(c.done for c in self.containers):
                await self._wait_for_deletion()
                return
            await asyncio.sleep(self.kubelet.tick)
        await self._terminate()

    def request_stop(self, grace: float) -> None:
        self.stopping = grace
        self._stop_requested.set()

    async def _wait_for_deletion(self) -> None:
        await self._stop_requested.wait()
        await self._terminate()

    def _prepare(self) -> None:
        uid, gid = self._user(self.pod["spec"]["containers"][0])
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        if fs_group is not None and uid is not None:
            gid = _UID_BASE + self.slot * 65536 + int(fs_group) % 65536
        self.fs = podfs.PodFilesystem(
            self.root, podfs.Owner(uid, gid), self.kubelet.state_dir / "claims"
        )
        self.fs.prepare(self.pod, self.kubelet.lookup, self.kubelet.issue_token)
        for volume in self.pod["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                self.kubelet.bind_claim(
                    self.pod["metadata"]["namespace"], volume["persistentVolumeClaim"]["claimName"]
                )

    def _env(self, container: ContainerState, mounts: dict[str, Path]) -> dict[str, str]:
        assert container.image is not None
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOSTNAME": self.pod["metadata"]["name"],
        }
        # The pod's address is known before its containers start, as on a real node.
        status = {**self.pod.get("status", {}), "podIP": self.ip, "hostIP": "127.0.0.1"}
        seen = {**self.pod, "status": status}
        env.update(
            podfs.container_env(
                seen, container.spec, container.image.env, self.kubelet.lookup, mounts
            )
        )
        env.update(pythonpath_env(self.kubelet.runtime))
        server = self.kubelet.server
        env.update(KUBERNETES_SERVICE_HOST=server.host, KUBERNETES_SERVICE_PORT=str(server.port))
        token_dir = mounts.get("/var/run/secrets/kubernetes.io/serviceaccount")
        if token_dir is not None:
            kubeconfig = self.root / "kubeconfig"
            uid, gid = self._user(container.spec)
            podfs.write_kubeconfig(
                kubeconfig,
                server.url,
                token_dir / "ca.crt",
                token_dir / "token",
                podfs.Owner(uid, gid),
            )
            env["KUBECONFIG"] = str(kubeconfig)
        return env

    async def _start(self, container: ContainerState) -> None:
        try:
            await self._exec(container)
        finally:
            container.starting = False

    async def _exec(self, container: ContainerState) -> None:
        assert container.image is not None
        assert self.fs is not None
        mounts = self.fs.mounts(container.spec)
        try:
            env = self._env(container, mounts)
        except podfs.VolumeNotReady as err:
            container.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(err)}
            }
            container.next_start = time.monotonic() + 1.0
            return
        argv = list(container.spec.get("command") or container.image.entrypoint)
        argv += container.spec.get("args") or []
        argv = self.kubelet.runtime.command(
            [podfs.translate(podfs.expand(a, env), mounts) for a in argv]
        )
        workdir = podfs.translate(
            container.spec.get("workingDir") or container.image.workdir, mounts
        )
        # The image's WORKDIR exists only if a volume provides it; else the pod's own folder.
        cwd = workdir if workdir in {str(p) for p in mounts.values()} else str(self.root)
        uid, gid = self._user(container.spec)
        # One file per run: the kubelet keeps the current and the previous instance's logs.
        log_path = self.root / "logs" / f"{container.name}-{container.restart_count}.log"
        with log_path.open("ab") as output:
            try:
                container.process = await asyncio.create_subprocess_exec(
                    *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=output,
                    stderr=asyncio.subprocess.STDOUT, start_new_session=True,
                    user=uid, group=gid, extra_groups=[] if uid is not None else None,
                )  # fmt: skip
            except OSError as err:
                container.state = {"waiting": {"reason": "RunContainerError", "message": str(err)}}
                container.next_start = time.monotonic() + max(container.backoff, 1.0)
                return
        container.started_at = _iso()
        container.state = {"running": {"startedAt": container.started_at}}
        container.ready = "readinessProbe" not in container.spec
        container.probe_due = {
            kind: time.monotonic() + container.spec[kind].get("initialDelaySeconds", 0)
            for kind in ("readinessProbe", "livenessProbe") if kind in container.spec
        }  # fmt: skip
        container.failures = {}

    def _start_due(self) -> None:
        for container in self.containers:
            if (
                container.process is None
                and not container.done
                and not container.starting
                and time.monotonic() >= container.next_start
            ):
                container.starting = True
                task = asyncio.get_running_loop().create_task(self._start(container))
                self.kubelet.background.add(task)
                task.add_done_callback(self.kubelet.background.discard)

    def _reap(self) -> None:
        policy = self.pod["spec"].get("restartPolicy", "Always")
        for container in self.containers:
            process = container.process
            if process is None or process.returncode is None:
                continue
            code = process.returncode
            code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal, as runc
            container.process = None
            container.ready = False
            terminated = {
                "exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": container.started_at, "finishedAt": _iso(),
            }  # fmt: skip
            restart = policy == "Always" or (policy == "OnFailure" and code != 0)
            if restart:
                container.last_state = {"terminated": terminated}
                container.restart_count += 1
                container.backoff = min(max(container.backoff * 2, self.kubelet.backoff), 300.0)
                container.next_start = time.monotonic() + container.backoff
                container.state = {"waiting": {"reason": "CrashLoopBackOff", "message": (
                    f"back-off {container.backoff:g}s restarting failed container={container.name}"
                    f" pod={self.pod['metadata']['name']}"
                )}}  # fmt: skip
            else:
                container.state = {"terminated": terminated}
                container.done = True

    async def _probe_due(self) -> None:
        for container in self.containers:
            if container.process is None:
                continue
            for kind, due in list(container.probe_due.items()):
                if time.monotonic() < due:
                    continue
                probe = container.spec[kind]
                container.probe_due[kind] = time.monotonic() + probe.get("periodSeconds", 10)
                ok = await self._probe(container, probe)
                threshold = (
                    probe.get("failureThreshold", 3) if not ok else probe.get("successThreshold", 1)
                )
                container.failures[kind] = 0 if ok else container.failures.get(kind, 0) + 1
                if kind == "readinessProbe":
                    container.ready = (
                        ok if ok or container.failures[kind] >= threshold else container.ready
                    )
                elif not ok and container.failures[kind] >= threshold and container.process:
                    self._signal(container, signal.SIGKILL)

    async def _probe(self, container: ContainerState, probe: Obj) -> bool:
        timeout = probe.get("timeoutSeconds", 1)
        try:
            if "httpGet" in probe or "tcpSocket" in probe:
                action = probe.get("httpGet") or probe["tcpSocket"]
                port = self._port(container.spec, action["port"])
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.ip, port), timeout
                )
                try:
                    if "httpGet" not in probe:
                        return True
                    path = action.get("path", "/")
                    request = f"GET {path} HTTP/1.0\r\nHost: {self.ip}\r\n{_PROBE_AGENT}\r\n\r\n"
                    writer.write(request.encode())
                    await writer.drain()
                    line = await asyncio.wait_for(reader.readline(), timeout)
                    code = int(line.split()[1])
                    return 200 <= code < 400
                finally:
                    writer.close()
            if "exec" in probe:
                assert self.fs is not None
                mounts = self.fs.mounts(container.spec)
                uid, gid = self._user(container.spec)
                argv = self.kubelet.runtime.command(
                    [podfs.translate(a, mounts) for a in probe["exec"]["command"]]
                )
                process = await asyncio.create_subprocess_exec(
                    *argv, env=self._env(container, mounts), user=uid, group=gid,
                    extra_groups=[] if uid is not None else None,
                    stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                return await asyncio.wait_for(process.wait(), timeout) == 0
        except (OSError, TimeoutError, ValueError, IndexError, podfs.VolumeNotReady):
            return False
        return False

    @staticmethod
    def _port(container: Obj, port: int | str) -> int:
        if isinstance(port, int):
            return port
        for declared in container.get("ports", []):
            if declared.get("name") == port:
                return int(declared["containerPort"])
        return int(port)

    # -- ending ----------------------------------------------------------------------------

    def _signal(self, container: ContainerState, sig: signal.Signals) -> None:
        if container.process is not None and container.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(container.process.pid, sig)

    async def _kill_all(self, grace: float) -> None:
        running = [
            c for c in self.containers if c.process is not None and c.process.returncode is None
        ]
        for container in running:
            self._signal(container, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for container in running:
            assert container.process is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    container.process.wait(), max(deadline - time.monotonic(), 0)
                )
            self._signal(container, signal.SIGKILL)
            await container.process.wait()

    async def _terminate(self) -> None:
        await self._kill_all(self.stopping or 0)
        policy_backup = self.pod["spec"].get("restartPolicy")
        self.pod["spec"]["restartPolicy"] = "Never"
        self._reap()
        self.pod["spec"]["restartPolicy"] = policy_backup
        self._report()
        self.kubelet.finish(self)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> Obj:
        containers = []
        for c in self.containers:
            entry: Obj = {
                "name": c.name, "image": c.spec.get("image", ""), "imageID": "",
                "ready": c.ready, "restartCount": c.restart_count,
                "started": "running" in c.state, "state": c.state,
            }  # fmt: skip
            if c.last_state:
                entry["lastState"] = c.last_state
            containers.append(entry)
        all_ready = all(c.ready for c in self.containers)
        finished = all(c.done for c in self.containers)
        if finished:
            phase = (
                "Succeeded"
                if all(c.state["terminated"]["exitCode"] == 0 for c in self.containers)
                else "Failed"
            )
        elif any("running" in c.state or c.restart_count for c in self.containers):
            phase = "Running"
        else:
            phase = "Pending"
        stamp = self.pod.get("status", {}).get("startTime") or _iso()
        previous = {c["type"]: c for c in (self._last_status or {}).get("conditions", [])}

        def condition(kind: str, ok: bool, reason: str = "") -> Obj:
            value = "True" if ok else "False"
            old = previous.get(kind)
            since = old["lastTransitionTime"] if old and old["status"] == value else _iso()
            found: Obj = {
                "type": kind,
                "status": value,
                "lastProbeTime": None,
                "lastTransitionTime": since,
            }
            if reason and not ok:
                found["reason"] = reason
            return found

        not_ready = "PodCompleted" if finished else "ContainersNotReady"
        return {
            "phase": phase,
            "conditions": [
                condition("PodReadyToStartContainers", self.volumes_ready),
                condition("Initialized", True),
                condition("Ready", all_ready and not finished, not_ready),
                condition("ContainersReady", all_ready and not finished, not_ready),
                condition("PodScheduled", True),
            ],
            "hostIP": "127.0.0.1",
            "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": stamp,
            "containerStatuses": containers,
            "qosClass": self.pod.get("status", {}).get("qosClass", "BestEffort"),
        }

    def _report(self) -> None:
        status = self.status()
        if status == self._last_status:
            return
        self._last_status = status
        self.kubelet.write_status(self.pod, status)


class Kubelet:
    """One node: schedules pods onto itself and runs them."""

    def __init__(
        self,
        server: LocalApiServer,
        state_dir: Path,
        *,
        simulate: bool = False,
        backoff: float = 10.0,
        tick: float = 0.1,
        start_delay: dict[str, float] | None = None,
    ) -> None:
        self.server = server
        self.start_delay = start_delay or {}
        """Image repository -> extra seconds before its containers first start, as a slow
        image pull or a busy node would cost (benchmarks use it; nothing else waits)."""
        self.state_dir = state_dir.resolve()
        self.simulate = simulate
        self.backoff = backoff
        self.tick = tick
        self.runtime: Runtime = detect_runtime()
        self.isolate = os.geteuid() == 0 and self.runtime.shared
        self.workers: dict[str, PodWorker] = {}
        self.background: set[asyncio.Task[Any]] = set()
        self._slots: set[int] = set()
        self._subscription: Subscription | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._claims_task: asyncio.Task[None] | None = None
        self.workloads = WorkloadControllers(server.cluster)

    # -- wiring ----------------------------------------------------------------------------

    def _pods(self) -> Any:
        rtype = self.server.registry.lookup("", "v1", "pods")
        assert rtype is not None
        return rtype

    def lookup(self, plural: str, namespace: str, name: str) -> Obj | None:
        return self.server.store.get(("", plural), namespace, name)

    def issue_token(self, pod: Obj, expiration: int) -> str:
        account = self.lookup(
            "serviceaccounts",
            pod["metadata"]["namespace"],
            pod["spec"].get("serviceAccountName", "default"),
        )
        if account is None:
            raise podfs.VolumeNotReady(
                f'serviceaccount "{pod["spec"].get("serviceAccountName")}" not found'
            )
        token, _ = self.server.authenticator.issue(account, max(expiration, 600), pod)
        return token

    def bind_claim(self, namespace: str, name: str) -> None:
        """Bind a claim to its local folder, as a local-path provisioner would."""
        claim = self.lookup("persistentvolumeclaims", namespace, name)
        if claim is None or claim.get("status", {}).get("phase") == "Bound":
            return
        rtype = self.server.registry.lookup("", "v1", "persistentvolumeclaims")
        assert rtype is not None
        size = claim["spec"].get("resources", {}).get("requests", {}).get("storage", "1Gi")
        status = {
            "phase": "Bound",
            "capacity": {"storage": size},
            "accessModes": claim["spec"].get("accessModes", ["ReadWriteOnce"]),
        }
        patch = {"spec": {"volumeName": f"local-{claim['metadata']['uid']}"}}
        with contextlib.suppress(ApiError):
            self.server.cluster.patch(rtype, namespace, name, "application/merge-patch+json", patch)
            self.server.cluster.patch(
                rtype, namespace, name, "application/merge-patch+json", {"status": status}, "status"
            )

    def write_status(self, pod: Obj, status: Obj) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            self.server.cluster.patch(
                self._pods(),
                meta["namespace"],
                meta["name"],
                "application/merge-patch+json",
                {"status": status},
                "status",
            )

    def _make_traversable(self) -> bool:
        """Pods run as other users and must reach their folders: add search permission (not
        listing) for others on the state folder and every parent we own."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for folder in [self.state_dir, *self.state_dir.parents]:
            mode = folder.stat().st_mode
            if mode & stat.S_IXOTH:
                continue
            if folder.stat().st_uid != os.geteuid():
                log.warning("pods cannot reach %s (not searchable by others)", folder)
                return False
            folder.chmod(mode | stat.S_IXOTH)
        return True

    async def start(self) -> None:
        if self.isolate and not self._make_traversable():
            self.isolate = False
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.isolate:
            reason = (
                "it does not run as root"
                if os.geteuid() != 0
                else (f"the Python runtime ({self.runtime.python}) is not usable by other users")
            )
            log.warning(
                "LOCAL CLUSTER ISOLATION IS OFF: %s, so every pod runs as the kubelet's own user"
                " and pods can read each other's environment and files. Run as root for"
                " per-pod users.", reason,
            )  # fmt: skip
        self._register_node()
        self.server.log_source = self
        self.workloads.start()
        self._subscription = self.server.store.subscribe(("", "pods"))
        for pod in self.server.store.items(("", "pods")):
            self._on_pod(pod, deleted=False)
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())
        self._claims = self.server.store.subscribe(("", "persistentvolumeclaims"))
        self._claims_task = asyncio.get_running_loop().create_task(self._reclaim())

    async def stop(self) -> None:
        await self.workloads.stop()
        if self._claims_task is not None:
            self._claims_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._claims_task
            self.server.store.unsubscribe(self._claims)
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._subscription is not None:
            self.server.store.unsubscribe(self._subscription)
        workers = list(self.workers.values())
        for worker in workers:
            if worker.task is not None:
                worker.task.cancel()
        await asyncio.gather(*(w.task for w in workers if w.task), return_exceptions=True)
        self.server.log_source = None

    def _register_node(self) -> None:
        nodes = self.server.registry.lookup("", "v1", "nodes")
        assert nodes is not None
        if self.server.store.get(("", "nodes"), "", NODE_NAME) is None:
            self.server.cluster.create(
                nodes,
                "",
                {"metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME}}},
            )
        capacity = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 1024}Ki",
            "pods": "1000",
        }
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "process kubelet is posting ready status",
            "lastHeartbeatTime": now(),
            "lastTransitionTime": now(),
        }
        info = {
            "kubeletVersion": "v1.32.0+cadre.local",
            "operatingSystem": "linux",
            "architecture": os.uname().machine,
            "containerRuntimeVersion": "cadre-process://1",
            "kernelVersion": os.uname().release,
            "osImage": "local processes",
            "kubeProxyVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
        }
        status = {
            "capacity": capacity, "allocatable": capacity, "conditions": [ready],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                          {"type": "Hostname", "address": NODE_NAME}],
            "nodeInfo": info,
        }  # fmt: skip
        self.server.cluster.patch(
            nodes, "", NODE_NAME, "application/merge-patch+json", {"status": status}, "status"
        )

    async def _reclaim(self) -> None:
        """A deleted claim's folder goes with it (reclaim policy Delete, as local-path does)."""
        while True:
            change = await self._claims.queue.get()
            if change.type == "DELETED":
                meta = change.obj["metadata"]
                folder = (
                    self.state_dir / "claims" / meta["namespace"] / f"{meta['name']}-{meta['uid']}"
                )
                await asyncio.to_thread(shutil.rmtree, folder, True)

    async def _loop(self) -> None:
        assert self._subscription is not None
        while True:
            change = await self._subscription.queue.get()
            try:
                self._on_pod(change.obj, deleted=change.type == "DELETED")
            except Exception:
                log.exception("kubelet failed on pod %s", change.obj["metadata"].get("name"))

    def _on_pod(self, pod: Obj, deleted: bool) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid = meta["uid"]
        worker = self.workers.get(uid)
        if deleted:
            if worker is not None and worker.task is not None:
                worker.task.cancel()
            return
        if not spec.get("nodeName"):
            if spec.get(
                "schedulerName", "default-scheduler"
            ) == "default-scheduler" and not meta.get("deletionTimestamp"):
                with contextlib.suppress(ApiError):
                    self.server.cluster.bind(
                        meta["namespace"],
                        meta["name"],
                        {"target": {"kind": "Node", "name": NODE_NAME}},
                    )
            return
        if spec["nodeName"] != NODE_NAME:
            return
        if worker is None:
            if meta.get("deletionTimestamp"):
                self._delete_now(pod)
                return
            slot = next(
                i for i in range(1, 65000) if i not in self._slots and i & 255 not in (0, 255)
            )
            self._slots.add(slot)
            worker = PodWorker(self, pod, slot)
            self.workers[uid] = worker
            if self.simulate:
                self._simulate(worker)
                return
            worker.task = asyncio.get_running_loop().create_task(worker.run())
            return
        worker.pod = pod
        if meta.get("deletionTimestamp") and worker.stopping is None:
            worker.request_stop(float(meta.get("deletionGracePeriodSeconds", 30)))
            if self.simulate:
                self.finish(worker)

    def _simulate(self, worker: PodWorker) -> None:
        """KWOK-style: Running and Ready at once, no process (operator scale tests)."""
        worker.volumes_ready = True
        for container in worker.containers:
            container.state = {"running": {"startedAt": _iso()}}
            container.ready = True
        worker._report()

    def finish(self, worker: PodWorker) -> None:
        """The pod's processes are gone: delete it for good (grace 0), free its address."""
        self.workers.pop(worker.pod["metadata"]["uid"], None)
        self._slots.discard(worker.slot)
        if worker.stopping is not None:
            self._delete_now(worker.pod)
        shutil.rmtree(worker.root / "volumes", ignore_errors=True)

    def _delete_now(self, pod: Obj) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiError):
            self.server.cluster.delete(
                self._pods(), meta["namespace"], meta["name"], {"gracePeriodSeconds": 0}
            )

    # -- logs (the API server's LogSource) -----------------------------------------------

    def _running(self, uid: str, name: str) -> bool:
        """Whether a container's process is alive (``logs -f`` ends when it exits)."""
        worker = self.workers.get(uid)
        if worker is None:
            return False
        found = next((c for c in worker.containers if c.name == name), None)
        return found is not None and found.process is not None and found.process.returncode is None

    async def stream(
        self,
        pod: Obj,
        container: str,
        follow: bool,
        tail_lines: int | None,
        timestamps: bool,
        previous: bool = False,
    ) -> AsyncIterator[bytes]:
        folder = self.state_dir / "pods" / pod["metadata"]["uid"] / "logs"
        runs = sorted((int(p.stem.rsplit("-", 1)[1]), p) for p in folder.glob(f"{container}-*.log"))
        if previous:
            if len(runs) < 2:
                name = pod["metadata"]["name"]
                raise ApiError(
                    400,
                    "BadRequest",
                    f'previous terminated container "{container}" in pod "{name}" not found',
                )
            path, follow = runs[-2][1], False
        elif runs:
            path = runs[-1][1]
        else:
            return
        with path.open("rb") as handle:
            data = handle.read()
            if tail_lines is not None:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-tail_lines:]) if tail_lines else b""
            if data:
                yield data
            while follow and self._running(pod["metadata"]["uid"], container):
                chunk = handle.read()
                if chunk:
                    yield chunk
                else:
                    await asyncio.sleep(0.1)
            rest = handle.read()
            if follow and rest:
                yield rest
