"""Resource limits for local pods through Linux control groups, as a container runtime applies
them: a container's ``resources.limits.memory`` is its memory cgroup's limit (exceeding it gets
the container OOM-killed, reported ``OOMKilled``), ``limits.cpu`` its CPU quota, and every
pod's containers share a pids limit (the kubelet's ``podPidsLimit``), so a fork bomb stays in
its pod.

Only where the kubelet may write them: cgroup v1 hierarchies (memory, pids, cpu) writable by a
root kubelet. Elsewhere (not root, cgroup v2 only, a read-only /sys/fs/cgroup) ``probe`` says
why and pods run without limits; the kubelet says so at start.

A container joins its cgroups before it runs anything of its own: the kubelet starts it as root
through a shell that writes its own pid into each ``cgroup.procs`` and then becomes the pod's
user with util-linux ``setpriv`` (``namespaces.as_user``; no window in which a child could
fork outside)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from cadre.api.types import Obj

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "pids", "cpu")
CFS_PERIOD_US = 100_000
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number (``512Mi`` -> 536870912, ``500m`` -> 0.5)."""
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    number, unit = float(match[1]), match[2] or ""
    return number / 1000 if unit == "m" else number * _UNITS[unit]


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None
    cpu_quota_us: int | None = None
    pids: int | None = None


def container_limits(container: Obj, pod_pids: int | None) -> Limits:
    """What a container's ``resources.limits`` ask of its cgroups (pure)."""
    limits = (container.get("resources") or {}).get("limits") or {}
    memory = limits.get("memory")
    cpu = limits.get("cpu")
    return Limits(
        memory_bytes=int(quantity(memory)) if memory is not None else None,
        cpu_quota_us=max(int(quantity(cpu) * CFS_PERIOD_US), 1000) if cpu is not None else None,
        pids=pod_pids,
    )


class Cgroups:
    """This kubelet's cgroups: ``/sys/fs/cgroup/<controller>/cadre-<name>/<pod>/<container>``."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = f"cadre-{name}"

    def _dirs(self, pod: str, container: str | None = None) -> dict[str, Path]:
        parts = [self.name, pod] + ([container] if container else [])
        return {c: self.root.joinpath(c, *parts) for c in CONTROLLERS}

    def prepare(self, pod: str, container: str, limits: Limits) -> list[Path]:
        """Create the container's cgroups with their limits; the ``cgroup.procs`` files its
        first process must write its pid into."""
        pod_dirs = self._dirs(pod)
        dirs = self._dirs(pod, container)
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        if limits.pids is not None:  # the pod's processes together, as podPidsLimit
            (pod_dirs["pids"] / "pids.max").write_text(str(limits.pids))
        if limits.memory_bytes is not None:
            (dirs["memory"] / "memory.limit_in_bytes").write_text(str(limits.memory_bytes))
        if limits.cpu_quota_us is not None:
            (dirs["cpu"] / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
            (dirs["cpu"] / "cpu.cfs_quota_us").write_text(str(limits.cpu_quota_us))
        return [path / "cgroup.procs" for path in dirs.values()]

    def oom_kills(self, pod: str, container: str) -> int:
        """How many processes of the container the kernel has killed for its memory limit
        (over all its runs: compare with the count when the run started)."""
        control = self._dirs(pod, container)["memory"] / "memory.oom_control"
        with contextlib.suppress(OSError, ValueError):
            for line in control.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    def remove(self, pod: str) -> None:
        """The pod's cgroups, once its processes are gone (a cgroup with a process stays)."""
        for path in self._dirs(pod).values():
            if not path.exists():
                continue
            for child in sorted(path.iterdir(), reverse=True):
                if child.is_dir():
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                path.rmdir()

    def close(self) -> None:
        for controller in CONTROLLERS:
            with contextlib.suppress(OSError):
                (self.root / controller / self.name).rmdir()


def probe(name: str, root: Path = ROOT) -> tuple[Cgroups | None, str]:
    """This kubelet's cgroups, or None and why pods get no resource limits here."""
    if os.geteuid() != 0:
        return None, "the kubelet does not run as root"
    if shutil.which("setpriv") is None:
        return None, "util-linux setpriv is not installed"
    missing = [c for c in CONTROLLERS if not (root / c / "cgroup.procs").exists()]
    if missing:
        return None, f"no cgroup v1 hierarchy for {', '.join(missing)} under {root}"
    cgroups = Cgroups(root, name)
    try:
        for controller in CONTROLLERS:
            (root / controller / cgroups.name).mkdir(exist_ok=True)
    except OSError as err:
        return None, f"cannot create cgroups under {root}: {err}"
    return cgroups, "memory, CPU and pids limits are enforced by cgroups"


def joining(procs: list[Path], argv: list[str]) -> list[str]:
    """``argv`` run by a root shell that first puts itself into the cgroups (``procs``), so
    nothing of the container runs outside them (pure)."""
    joins = " && ".join(f"echo $$ > '{p}'" for p in procs)
    return ["/bin/sh", "-c", f'{joins} && exec "$@"', "sh", *argv]
