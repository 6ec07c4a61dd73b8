"""A container's own root filesystem, as a container runtime gives it: a read-only view of the
operating system's directories and of Cadre's installation (what the image holds), the pod's
volumes at their ``mountPath``s, a ``/proc`` of its own PID namespace and a minimal ``/dev``.
The user's home, the checkout (but for Cadre's code), ``/tmp``, the cluster's state folder and
other pods' folders are not there at all. With ``readOnlyRootFilesystem`` the root is
read-only, so the volumes are exactly the writable paths; without it, the root is a writable
tmpfs of the container's own (memory its cgroup is charged for), as a container's layer is.

bubblewrap (``bwrap``) builds it, unprivileged, in a user namespace of its own, and runs the
container's program as PID 1 of a new PID namespace (``--as-pid-1``; ``--die-with-parent``, so
a killed ``bwrap`` takes its container with it). Paths inside are the in-cluster paths, so no
translation is needed, and in-cluster clients find the service-account token where Kubernetes
mounts it. Where bwrap cannot run, the kubelet falls back to ``namespaces.py`` (PID namespace
only, paths translated by ``podfs.py``) and says so at start.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

BWRAP = shutil.which("bwrap") or "bwrap"
_SYSTEM = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt")
"""Top-level directories of the operating system an image of Cadre's needs (read-only)."""
RUNTIME_ROOT = "/cadre"
_TMP = "/tmp"  # noqa: S108 - inside the container: its own layer, not the host's /tmp


@dataclass(frozen=True)
class View:
    """What one container sees."""

    runtime: tuple[tuple[str, str], ...]
    """Cadre's installation: (host folder, path inside) (``runtime_folders``)."""
    volumes: Mapping[str, Path]
    """mountPath -> host folder or file."""
    read_only: frozenset[str]
    """mountPaths mounted read-only."""
    workdir: str
    read_only_root: bool
    hostname: str


def _expose(path: Path, targets: list[str]) -> list[str]:
    """bwrap arguments showing ``path`` read-only. Where a volume's mount point below it does
    not exist on the host, ``path`` is rebuilt on the container's root from its entries, so
    the mount point can be made (a runtime creates it in the container's layer)."""
    if path.is_symlink():
        return ["--symlink", str(path.readlink()), str(path)]
    below = [t for t in targets if t.startswith(f"{path}/")]
    if not any(not Path(t).exists() for t in below):
        return ["--ro-bind", str(path), str(path)]
    args = ["--dir", str(path)]
    for child in sorted(path.iterdir()):
        if child.is_symlink() or (child.is_dir() and os.access(child, os.R_OK | os.X_OK)):
            args += _expose(child, below)
        elif child.is_file() and os.access(child, os.R_OK):
            args += ["--ro-bind", str(child), str(child)]
    return args


def _system(targets: list[str]) -> list[str]:
    args: list[str] = []
    for name in _SYSTEM:
        path = Path("/") / name
        if path.is_symlink() or path.is_dir():
            args += _expose(path, targets)
    return args


def runtime_folders(pythonpath: Iterable[str], python: str) -> tuple[tuple[str, str], ...]:
    """Cadre's installation as the image holds it, (host folder, path inside): its import path
    at ``/cadre/<n>`` (a fixed place no volume covers, wherever the checkout lies: under
    ``/tmp``, a sandbox's ``/tmp`` volume would hide it) and, when the interpreter is not the
    operating system's, the interpreter's prefix at its own path."""
    folders = [(p, f"{RUNTIME_ROOT}/{n}") for n, p in enumerate(pythonpath) if Path(p).exists()]
    prefix = str(Path(sys.base_prefix))
    if not python.startswith("/usr/") and not prefix.startswith("/usr"):
        folders.append((prefix, prefix))
    return tuple(folders)


def pythonpath(runtime: Iterable[tuple[str, str]]) -> str:
    """``PYTHONPATH`` inside the container (the import path's folders where they are bound)."""
    return ":".join(inside for _, inside in runtime if inside.startswith(f"{RUNTIME_ROOT}/"))


def wrap(view: View, argv: list[str], hosts_file: Path | None = None) -> list[str]:
    """``argv`` run as PID 1 of new user, PID, mount, IPC and UTS namespaces with the
    container's view as its root (pure)."""
    args = [BWRAP, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
            "--die-with-parent", "--as-pid-1", "--hostname", view.hostname]  # fmt: skip
    args += _system(list(view.volumes))
    if hosts_file is not None:
        args += ["--ro-bind", str(hosts_file), "/etc/hosts"]
    args += ["--proc", "/proc", "--dev", "/dev"]
    for folder, inside in view.runtime:
        args += ["--ro-bind", folder, inside]
    if _TMP not in view.volumes and not view.read_only_root:
        args += ["--perms", "1777", "--dir", _TMP]
    # Parents before children, so a volume mounted inside another stays visible.
    for mount_path in sorted(view.volumes, key=len):
        kind = "--ro-bind" if mount_path in view.read_only else "--bind"
        args += [kind, str(view.volumes[mount_path]), mount_path]
    args += ["--dir", view.workdir]
    if view.read_only_root:
        args += ["--remount-ro", "/"]
    args += ["--chdir", view.workdir, "--", *argv]
    return args


@functools.cache
def available() -> str | None:
    """None when bwrap can build a container's root here, else why not."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    view = View(runtime_folders([], sys.executable), {}, frozenset(), "/", True, "probe")
    try:
        result = subprocess.run(wrap(view, ["/usr/bin/true"]), capture_output=True, text=True,
                                timeout=30, check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bwrap failed: {err}"
    if result.returncode != 0:
        return f"bwrap failed: {result.stderr.strip() or result.returncode}"
    return None
