"""One pod's life on the node: its volumes, its containers' processes, probes, restarts, the
status it reports and its end. The worker reaches the kubelet only through :class:`Node`, the
few services a node offers its pods."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cadre.api.types import Obj
from cadre.localcluster.apiserver.metadata import now
from cadre.localcluster.node import cgroups, namespaces, network, podfs, rootfs
from cadre.localcluster.node.cgroups import Cgroups
from cadre.localcluster.node.images import Image, Runtime, find_image, pythonpath_env
from cadre.localcluster.node.network import PodNetwork

log = logging.getLogger(__name__)


class Node(Protocol):
    """What a pod worker needs of its kubelet."""

    state_dir: Path
    start_delay: dict[str, float]
    backoff: float
    tick: float
    runtime: Runtime
    isolate: bool
    namespaces: bool
    rootfs: bool
    cgroups: Cgroups | None
    network: PodNetwork | None
    pod_pids_limit: int | None
    hosts: dict[str, str]
    background: set[asyncio.Task[Any]]

    @property
    def api_address(self) -> tuple[str, int]:
        """Host and port of the API server, as pods are told (KUBERNETES_SERVICE_*)."""
        ...

    @property
    def node_ip(self) -> str:
        """The node's address as its pods see it (``status.hostIP``)."""
        ...

    async def connect(self, worker: PodWorker) -> None:
        """The pod's network and the policies that apply to it, before anything of it runs."""
        ...

    def lookup(self, plural: str, namespace: str, name: str) -> Obj | None: ...

    def issue_token(self, pod: Obj, expiration: int) -> str: ...

    def bind_claim(self, namespace: str, name: str) -> None: ...

    def write_status(self, pod: Obj, status: Obj) -> None: ...

    def finish(self, worker: PodWorker) -> None: ...

    def unconfined_refusal(self, pod: Obj) -> str | None: ...


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
    killed: bool = False
    """The kubelet sent SIGKILL (unshare reports a signalled child as exit code 1)."""
    oom_kills: int = 0
    """Its memory cgroup's OOM kills when this run started (more at its end: OOMKilled)."""

    @property
    def name(self) -> str:
        return str(self.spec["name"])


def iso_now(timestamp: float | None = None) -> str:
    return (
        now()
        if timestamp is None
        else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )


class PodWorker:
    """One pod's life on the node: volumes, processes, probes, restarts, status, ending."""

    def __init__(self, kubelet: Node, pod: Obj, slot: int) -> None:
        self.kubelet = kubelet
        self.pod = pod
        self.slot = slot
        # Its own network's address, else a loopback address of its own on the host's.
        self.ip = (
            network.pod_ip(slot)
            if kubelet.network is not None
            else f"{_IP_PREFIX}.{slot >> 8}.{slot & 255}"
        )
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
        self.attached = False
        """Its network namespace and link exist (the kubelet removes them at the end)."""
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
            self.report()
            await self._wait_for_deletion()
            return
        refused = self.kubelet.unconfined_refusal(self.pod)
        if refused is not None:
            for container in self.containers:
                container.state = {"waiting": {"reason": "Unconfined", "message": refused}}
            self.report()
            await self._wait_for_deletion()
            return
        while not self.volumes_ready and self.stopping is None:
            try:
                self._prepare()
                await self.kubelet.connect(self)
                self.volumes_ready = True
            except (podfs.VolumeNotReady, network.NetworkError) as err:
                for container in self.containers:
                    container.state = {
                        "waiting": {"reason": "ContainerCreating", "message": str(err)}
                    }
                self.report()
                await asyncio.sleep(1.0)
        while self.stopping is None:
            self._start_due()
            await self._probe_due()
            self._reap()
            self.report()
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

    def _translated(self, mounts: dict[str, Path]) -> dict[str, Path]:
        """The paths to translate in a container's arguments and environment: none when it has
        a root of its own (it sees its volumes at their mount paths); otherwise each mount path
        to the volume's folder on the host (podfs.py)."""
        return {} if self.kubelet.rootfs else mounts

    def _env(self, container: ContainerState, mounts: dict[str, Path]) -> dict[str, str]:
        assert container.image is not None
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOSTNAME": self.pod["metadata"]["name"],
        }
        # The pod's address is known before its containers start, as on a real node.
        status = {**self.pod.get("status", {}), "podIP": self.ip, "hostIP": self.kubelet.node_ip}
        seen = {**self.pod, "status": status}
        env.update(
            podfs.container_env(
                seen, container.spec, container.image.env, self.kubelet.lookup,
                self._translated(mounts),
            )
        )  # fmt: skip
        if self.kubelet.rootfs:
            runtime = self.kubelet.runtime
            env["PYTHONPATH"] = rootfs.pythonpath(
                rootfs.runtime_folders(runtime.pythonpath, runtime.python)
            )
        else:
            env.update(pythonpath_env(self.kubelet.runtime))
        host, port = self.kubelet.api_address
        env.update(KUBERNETES_SERVICE_HOST=host, KUBERNETES_SERVICE_PORT=str(port))
        token_dir = mounts.get("/var/run/secrets/kubernetes.io/serviceaccount")
        # With a root of its own, in-cluster clients find the token where Kubernetes mounts
        # it; otherwise a kubeconfig points them at its folder.
        if token_dir is not None and not self.kubelet.rootfs:
            kubeconfig = self.root / "kubeconfig"
            uid, gid = self._user(container.spec)
            podfs.write_kubeconfig(
                kubeconfig,
                f"https://{host}:{port}",
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
            [podfs.translate(podfs.expand(a, env), self._translated(mounts)) for a in argv]
        )
        uid, gid = self._user(container.spec)
        # One file per run: the kubelet keeps the current and the previous instance's logs.
        log_path = self.root / "logs" / f"{container.name}-{container.restart_count}.log"
        argv, cwd = self._contained(container, argv, mounts)
        procs: list[Path] = []
        if self.kubelet.cgroups is not None:
            limits = cgroups.container_limits(container.spec, self.kubelet.pod_pids_limit)
            procs = self.kubelet.cgroups.prepare(self.pod["metadata"]["uid"], container.name,
                                                 limits)  # fmt: skip
            container.oom_kills = self.kubelet.cgroups.oom_kills(self.pod["metadata"]["uid"],
                                                                 container.name)  # fmt: skip
        argv, uid, gid = self._privileged(argv, uid, gid, procs)
        container.killed = False
        # Readable only by the kubelet (and so by the API server's log subresource): one
        # pod's transcript is not another pod's to read.
        os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT, 0o600))
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
        container.started_at = iso_now()
        container.state = {"running": {"startedAt": container.started_at}}
        container.ready = "readinessProbe" not in container.spec
        container.probe_due = {
            kind: time.monotonic() + container.spec[kind].get("initialDelaySeconds", 0)
            for kind in ("readinessProbe", "livenessProbe") if kind in container.spec
        }  # fmt: skip
        container.failures = {}

    def _contained(
        self, container: ContainerState, argv: list[str], mounts: dict[str, Path]
    ) -> tuple[list[str], str]:
        """``argv`` in the container's namespaces (its own root where bwrap runs, else a PID
        namespace on the host's files), and the host folder to start it in."""
        assert container.image is not None
        workdir = container.spec.get("workingDir") or container.image.workdir
        if self.kubelet.rootfs:
            security = container.spec.get("securityContext") or {}
            view = rootfs.View(
                runtime=rootfs.runtime_folders(self.kubelet.runtime.pythonpath,
                                               self.kubelet.runtime.python),
                volumes=mounts,
                read_only=frozenset(
                    m["mountPath"].rstrip("/") or "/"
                    for m in container.spec.get("volumeMounts", []) if m.get("readOnly")
                ),
                workdir=workdir,
                read_only_root=bool(security.get("readOnlyRootFilesystem")),
                hostname=self.pod["metadata"]["name"],
            )  # fmt: skip
            return rootfs.wrap(view, argv, self._hosts_file()), str(self.root)
        workdir = podfs.translate(workdir, mounts)
        # The image's WORKDIR exists only if a volume provides it; else the pod's own folder.
        cwd = workdir if workdir in {str(p) for p in mounts.values()} else str(self.root)
        return (namespaces.wrap(argv) if self.kubelet.namespaces else argv), cwd

    def _hosts_file(self) -> Path:
        """The pod's ``/etc/hosts``, as a kubelet writes it: loopback, the pod's own name at
        its address, and the names the node was told of."""
        path: Path = self.root / "etc-hosts"
        if not path.exists():
            lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
                     f"{self.ip}\t{self.pod['metadata']['name']}"]  # fmt: skip
            lines += [f"{address}\t{name}" for name, address in sorted(self.kubelet.hosts.items())]
            path.write_text("\n".join(lines) + "\n")
            path.chmod(0o644)
        return path

    def _privileged(
        self, argv: list[str], uid: int | None, gid: int | None, procs: list[Path]
    ) -> tuple[list[str], int | None, int | None]:
        """``argv`` as the pod's user inside its cgroups and its network namespace: what needs
        root (joining those) is done by root first, which then becomes the pod's user."""
        netns = network.netns_path(self.slot) if self.kubelet.network is not None else None
        if not procs and netns is None:
            return argv, uid, gid
        argv = namespaces.in_network(netns, namespaces.as_user(uid, gid, argv))
        return (cgroups.joining(procs, argv) if procs else argv), None, None

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
            if container.killed and self.kubelet.namespaces and code == 1:
                code = 128 + signal.SIGKILL
            reason = "Completed" if code == 0 else "Error"
            cg = self.kubelet.cgroups
            if code != 0 and cg is not None and cg.oom_kills(
                self.pod["metadata"]["uid"], container.name) > container.oom_kills:  # fmt: skip
                code, reason = 128 + signal.SIGKILL, "OOMKilled"
            container.process = None
            container.ready = False
            terminated = {
                "exitCode": code, "reason": reason,
                "startedAt": container.started_at, "finishedAt": iso_now(),
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
                paths = self._translated(mounts)
                argv = self.kubelet.runtime.command(
                    [podfs.translate(a, paths) for a in probe["exec"]["command"]]
                )
                if self.kubelet.rootfs:  # the container's view (a PID namespace of its own)
                    argv, _ = self._contained(container, argv, mounts)
                argv, uid, gid = self._privileged(argv, uid, gid, [])
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
        process = container.process
        if process is None or process.returncode is not None:
            return
        if sig == signal.SIGKILL:
            container.killed = True
        init = namespaces.namespace_init(process.pid) if self.kubelet.namespaces else None
        with contextlib.suppress(ProcessLookupError):
            if init is not None:
                # The container's PID 1: SIGKILL to it ends every process of the namespace.
                os.kill(init, sig)
            else:
                os.killpg(process.pid, sig)

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
        self.report()
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
        stamp = self.pod.get("status", {}).get("startTime") or iso_now()
        previous = {c["type"]: c for c in (self._last_status or {}).get("conditions", [])}

        def condition(kind: str, ok: bool, reason: str = "") -> Obj:
            value = "True" if ok else "False"
            old = previous.get(kind)
            since = old["lastTransitionTime"] if old and old["status"] == value else iso_now()
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
            "hostIP": self.kubelet.node_ip,
            "hostIPs": [{"ip": self.kubelet.node_ip}],
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "startTime": stamp,
            "containerStatuses": containers,
            "qosClass": self.pod.get("status", {}).get("qosClass", "BestEffort"),
        }

    def report(self) -> None:
        status = self.status()
        if status == self._last_status:
            return
        self._last_status = status
        self.kubelet.write_status(self.pod, status)
