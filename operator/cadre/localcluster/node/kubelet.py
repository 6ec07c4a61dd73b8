"""The process kubelet: runs the pods bound to its node as local processes, reports their
status as a kubelet does, serves their logs, and ends them gracefully.

It also plays the scheduler (binds every unscheduled pod to its one node). It runs on the API
server's event loop and uses the cluster's object layer directly (a real kubelet would use the
API over HTTP; the writes it makes are the same). Isolation is described in
docs/localcluster.md: each pod gets a slot reserved machine-wide (``slots.py``), so its own
address and, as root, its own network namespace with NetworkPolicies enforced (``network.py``,
``netpolicy.py``, ``egress.py``) and its own host user ids (as Kubernetes user namespaces do);
each container gets a root of its own and a PID namespace (``rootfs.py``, else
``namespaces.py``) and, where cgroups may be written, its limits (``cgroups.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from cadre.api import GROUP
from cadre.api.names import AGENT_LABEL, COMPONENT_LABEL
from cadre.api.types import Obj
from cadre.localcluster.apiserver.metadata import now
from cadre.localcluster.apiserver.server import ApiServer
from cadre.localcluster.apiserver.status import ApiError
from cadre.localcluster.apiserver.store import Subscription
from cadre.localcluster.controllers.deployments import DeploymentControllers
from cadre.localcluster.controllers.workloads import WorkloadControllers
from cadre.localcluster.node import cgroups, namespaces, netpolicy, network, podfs, rootfs
from cadre.localcluster.node.cgroups import Cgroups
from cadre.localcluster.node.egress import EgressRelay
from cadre.localcluster.node.images import (
    Runtime,
    detect_runtime,
)
from cadre.localcluster.node.network import PodNetwork
from cadre.localcluster.node.podworker import PodWorker, iso_now
from cadre.localcluster.node.slots import Slots

log = logging.getLogger(__name__)
DEFAULT_POD_PIDS_LIMIT = 1024
"""As a node's podPidsLimit: a fork bomb in a pod stays in it."""
NODE_NAME = "local"


class Kubelet:
    """One node: schedules pods onto itself and runs them."""

    def __init__(
        self,
        server: ApiServer,
        state_dir: Path,
        *,
        simulate: bool = False,
        backoff: float = 10.0,
        tick: float = 0.1,
        start_delay: dict[str, float] | None = None,
        allow_unconfined: bool = False,
        pod_pids_limit: int | None = DEFAULT_POD_PIDS_LIMIT,
        hosts: dict[str, str] | None = None,
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
        self.allow_unconfined = allow_unconfined
        """Run sandboxes of Agents on the real model API even without namespaces."""
        self.namespaces = False
        """Every container in its own PID and mount namespaces (``namespaces.py``); set at
        start, where this machine allows it."""
        self.rootfs = False
        """Every container with a root of its own (``rootfs.py``, bubblewrap): it sees only
        the system's folders, Cadre's installation and its volumes; set at start."""
        self.cgroups: Cgroups | None = None
        """Memory, CPU and pids limits (``cgroups.py``); set at start, where allowed."""
        self.pod_pids_limit = pod_pids_limit
        """Processes and threads a pod's containers may have together (None: no limit)."""
        self.hosts = dict(hosts or {})
        """Names every pod resolves (name -> address), in the ``/etc/hosts`` the kubelet
        writes for each pod as a kubelet does: the network's DNS for names a test makes up."""
        self.network: PodNetwork | None = None
        """Every pod in its own network namespace, NetworkPolicies enforced (``network.py``);
        set at start, where this machine allows it."""
        self._rules_lock = asyncio.Lock()
        self._rules_dirty = asyncio.Event()
        self._policies: Subscription | None = None
        self._namespaces: Subscription | None = None
        self._rules_task: asyncio.Task[None] | None = None
        self._relay = EgressRelay()
        self.workers: dict[str, PodWorker] = {}
        self.background: set[asyncio.Task[Any]] = set()
        # Simulated pods bind no address and run nothing: their slots need no reservation.
        self._slots = Slots(shared=not simulate)
        self._subscription: Subscription | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._claims_task: asyncio.Task[None] | None = None
        self.workloads = WorkloadControllers(server.cluster)
        self.deployments = DeploymentControllers(server.cluster)

    # -- wiring ----------------------------------------------------------------------------

    @property
    def api_address(self) -> tuple[str, int]:
        if self.network is not None:
            # As in a cluster: the API server at 443 of an address the pods can route to
            # (the table translates it to the server's loopback port).
            return network.NODE_IP, 443
        return self.server.host, self.server.port

    @property
    def node_ip(self) -> str:
        return network.NODE_IP if self.network is not None else "127.0.0.1"

    # -- the pod network -------------------------------------------------------------------

    async def connect(self, worker: PodWorker) -> None:
        if self.network is None:
            return
        await self.network.attach(worker.slot)
        worker.attached = True
        await self._apply_rules()

    async def _disconnect(self, worker: PodWorker) -> None:
        """The pod's link goes before its slot is free for another pod."""
        try:
            if self.network is not None and worker.attached:
                await self.network.detach(worker.slot)
                self._rules_dirty.set()
        finally:
            self._slots.release(worker.slot)

    def _net_pods(self) -> list[netpolicy.NetPod]:
        found = []
        for worker in self.workers.values():
            if not worker.attached:
                continue
            named = {
                str(port["name"]): (str(port.get("protocol", "TCP")).lower(),
                                    int(port["containerPort"]))
                for c in worker.pod["spec"].get("containers", [])
                for port in c.get("ports") or [] if port.get("name")
            }  # fmt: skip
            found.append(netpolicy.NetPod(
                worker.pod["metadata"]["namespace"], worker.pod["metadata"].get("labels") or {},
                worker.ip, network.interface(worker.slot), named,
            ))  # fmt: skip
        return found

    async def _apply_rules(self) -> None:
        """This node's NetworkPolicies as nftables rules, from the state right now."""
        if self.network is None:
            return
        async with self._rules_lock:
            self._rules_dirty.clear()
            namespaces_ = {
                n["metadata"]["name"]: n["metadata"].get("labels") or {}
                for n in self.server.store.items(("", "namespaces"))
            }
            policies = self.server.store.items(("networking.k8s.io", "networkpolicies"))
            node = netpolicy.NodeNetwork(
                self.network.table, network.NODE_IP, network.POD_CIDR, self.server.port,
                self._relay.tcp_port, self._relay.dns_port,
            )  # fmt: skip
            rules = netpolicy.ruleset(node, self._net_pods(), namespaces_, policies)
            await self.network.apply(rules)

    async def _keep_rules(self) -> None:
        """Re-apply when a policy, a namespace's labels or this node's pods change."""
        assert self._policies is not None
        assert self._namespaces is not None
        watched = (self._policies.queue, self._namespaces.queue)

        async def drain(queue: asyncio.Queue[Any]) -> None:
            while True:
                await queue.get()
                self._rules_dirty.set()

        drains = [asyncio.get_running_loop().create_task(drain(q)) for q in watched]
        try:
            while True:
                await self._rules_dirty.wait()
                try:
                    await self._apply_rules()
                except network.NetworkError:
                    log.exception("could not apply the pod network's rules")
                    await asyncio.sleep(1.0)
        finally:
            for task in drains:
                task.cancel()

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

    def unconfined_refusal(self, pod: Obj) -> str | None:
        """Why a pod must not start here: a sandbox runs commands a real model wrote, and
        without namespaces nothing confines them to the pod (a scripted model's sandboxes,
        and every other pod, still run). None when it may start."""
        if (self.namespaces and self.network is not None) or self.allow_unconfined:
            return None
        labels = pod["metadata"].get("labels") or {}
        if labels.get(COMPONENT_LABEL) != "sandbox":
            return None
        namespace = pod["metadata"]["namespace"]
        agent = self.server.store.get((GROUP, "agents"), namespace, labels.get(AGENT_LABEL, ""))
        base_url = ((agent or {}).get("spec") or {}).get("baseURL") or ""
        if base_url and "api.anthropic.com" not in base_url:
            return None
        missing = " and ".join(
            what
            for what, present in (("PID namespaces", self.namespaces),
                                  ("network namespaces", self.network is not None))
            if not present
        )  # fmt: skip
        return (
            f"this machine gives pods no {missing}, so the commands a real model writes"
            " would run unconfined on it; start `cadre dev up --allow-unconfined` to accept"
            " that, or use a real cluster"
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
        if not self.simulate:
            lacking_root = rootfs.available()
            self.rootfs = lacking_root is None
            self.namespaces = self.rootfs  # bwrap gives each container its PID namespace too
            if self.rootfs:
                log.info("local pods: each container has a root of its own (bubblewrap)")
            else:
                log.warning(
                    "LOCAL PODS SEE THE HOST'S FILES (%s): a pod reads whatever its user may"
                    " read outside its volumes, and readOnlyRootFilesystem is not applied.",
                    lacking_root,
                )
        if not self.simulate and not self.rootfs:
            missing = namespaces.available()
            self.namespaces = missing is None
            if missing is not None:
                log.warning(
                    "LOCAL PODS HAVE NO PID NAMESPACES (%s): a process a pod detaches can"
                    " outlive it, and pods see each other's processes. Sandboxes of Agents on"
                    " the real model API will not start%s.", missing,
                    " (--allow-unconfined was given: they will)" if self.allow_unconfined else "",
                )  # fmt: skip
        if not self.simulate:
            self.cgroups, said = cgroups.probe(f"{os.getpid()}-{id(self):x}")
            if self.cgroups is None:
                log.warning("LOCAL PODS HAVE NO RESOURCE LIMITS (%s): a pod's memory, CPU and"
                            " processes are not bounded.", said)  # fmt: skip
            else:
                log.info("local pods: %s", said)
        if not self.simulate:
            lacking = network.probe()
            if lacking is None:
                self.network = PodNetwork(f"{id(self):x}")
                log.info("local pods: each in its own network namespace (%s, pods %s);"
                         " NetworkPolicies are enforced", network.NODE_IP,
                         network.POD_CIDR)  # fmt: skip
            else:
                log.warning(
                    "LOCAL PODS SHARE THE HOST NETWORK (%s): NetworkPolicies are not enforced"
                    " and a pod reaches every loopback service. Sandboxes of Agents on the real"
                    " model API will not start%s.", lacking,
                    " (--allow-unconfined was given: they will)" if self.allow_unconfined else "",
                )  # fmt: skip
        if not self.isolate:
            reason = (
                "it does not run as root"
                if os.geteuid() != 0
                else (f"the Python runtime ({self.runtime.python}) is not usable by other users")
            )
            if self.rootfs:
                log.warning(
                    "LOCAL PODS SHARE ONE USER: %s, so every pod runs as the kubelet's own user;"
                    " their own roots and PID namespaces still keep each pod's files and"
                    " processes out of the others' sight. Run as root for per-pod users.",
                    reason,
                )
            else:
                log.warning(
                    "LOCAL CLUSTER ISOLATION IS OFF: %s, so every pod runs as the kubelet's own"
                    " user and pods can read each other's environment and files. Run as root"
                    " for per-pod users.", reason,
                )  # fmt: skip
        self._register_node()
        self.server.log_source = self
        self.workloads.start()
        self.deployments.start()
        self._subscription = self.server.store.subscribe(("", "pods"))
        for pod in self.server.store.items(("", "pods")):
            self._on_pod(pod, deleted=False)
        self._loop_task = asyncio.get_running_loop().create_task(self._loop())
        self._claims = self.server.store.subscribe(("", "persistentvolumeclaims"))
        self._claims_task = asyncio.get_running_loop().create_task(self._reclaim())
        if self.network is not None:
            await self._relay.start()
            await self._apply_rules()
            self._policies = self.server.store.subscribe(("networking.k8s.io", "networkpolicies"))
            self._namespaces = self.server.store.subscribe(("", "namespaces"))
            self._rules_task = asyncio.get_running_loop().create_task(self._keep_rules())

    async def stop(self) -> None:
        await self.workloads.stop()
        await self.deployments.stop()
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
        if self._rules_task is not None:
            self._rules_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rules_task
        for subscription in (self._policies, self._namespaces):
            if subscription is not None:
                self.server.store.unsubscribe(subscription)
        if self.network is not None:
            for worker in workers:
                if worker.attached:
                    await self.network.detach(worker.slot)
            self.network.close()
            await self._relay.stop()
        self._slots.release_all()
        if self.cgroups is not None:
            for worker in workers:
                self.cgroups.remove(worker.pod["metadata"]["uid"])
            self.cgroups.close()
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
            "addresses": [{"type": "InternalIP", "address": self.node_ip},
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
            worker = PodWorker(self, pod, self._slots.take())
            self.workers[uid] = worker
            if self.simulate:
                self._simulate(worker)
                return
            worker.task = asyncio.get_running_loop().create_task(worker.run())
            return
        if (worker.pod["metadata"].get("labels") or {}) != (meta.get("labels") or {}):
            self._rules_dirty.set()
        worker.pod = pod
        if meta.get("deletionTimestamp") and worker.stopping is None:
            worker.request_stop(float(meta.get("deletionGracePeriodSeconds", 30)))
            if self.simulate:
                self.finish(worker)

    def _simulate(self, worker: PodWorker) -> None:
        """KWOK-style: Running and Ready at once, no process (operator scale tests)."""
        worker.volumes_ready = True
        for container in worker.containers:
            container.state = {"running": {"startedAt": iso_now()}}
            container.ready = True
        worker.report()

    def finish(self, worker: PodWorker) -> None:
        """The pod's processes are gone: delete it for good (grace 0), free its address."""
        self.workers.pop(worker.pod["metadata"]["uid"], None)
        if self.network is not None and worker.attached:
            task = asyncio.get_running_loop().create_task(self._disconnect(worker))
            self.background.add(task)
            task.add_done_callback(self.background.discard)
        else:
            self._slots.release(worker.slot)
        if self.cgroups is not None:
            self.cgroups.remove(worker.pod["metadata"]["uid"])
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
