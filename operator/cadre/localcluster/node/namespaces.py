"""Each container in its own PID and mount namespace, as a container runtime would run it.

A process of a pod sees only its pod's container processes (``/proc`` is remounted inside),
and the whole namespace dies with its first process: deleting a pod or restarting a container
ends every process of it, including ones detached with ``setsid``/``nohup``/a double fork (the
attack this closes: such a process outlived its sandbox pod and read a later harness's
``/proc/PID/environ``). util-linux ``unshare`` does it: as root directly, dropping to the
pod's user with ``setpriv`` inside; not as root, inside a user namespace of its own
(``--map-current-user``), which works for unprivileged users where the kernel allows it.

As in a container, the first process is PID 1 of its namespace: the kernel gives it no
default action for SIGTERM, so a program that does not handle SIGTERM keeps running until the
grace period ends and the kubelet sends SIGKILL, exactly as on a real node.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

UNSHARE = shutil.which("unshare") or "unshare"
SETPRIV = shutil.which("setpriv") or "setpriv"


def _base(rootless: bool) -> list[str]:
    argv = [UNSHARE]
    if rootless:
        argv += ["--user", "--map-current-user"]
    return [*argv, "--pid", "--fork", "--mount-proc"]


@functools.cache
def available(rootless: bool) -> str | None:
    """None when namespaces work here, else why not (said once at the kubelet's start)."""
    if shutil.which("unshare") is None:
        return "util-linux unshare is not installed"
    try:
        result = subprocess.run(
            [*_base(rootless), "true"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unshare failed: {err}"
    if result.returncode != 0:
        return f"unshare failed: {result.stderr.strip() or result.returncode}"
    return None


def wrap(argv: list[str], uid: int | None, gid: int | None, rootless: bool) -> list[str]:
    """``argv`` run as PID 1 of new PID and mount namespaces, as ``uid``/``gid`` when given
    (the kubelet is root then: unshare runs as root and the pod's user is taken inside)."""
    inner = list(argv)
    if uid is not None:
        group = uid if gid is None else gid
        inner = [SETPRIV, f"--reuid={uid}", f"--regid={group}", "--clear-groups", "--", *inner]
    return [*_base(rootless), *inner]


def namespace_init(unshare_pid: int) -> int | None:
    """The container's first process (PID 1 inside): the only child of ``unshare``. None when
    it has not been forked yet or is gone."""
    try:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def processes_in(unshare_pid: int) -> list[int]:
    """Every process in the container's PID namespace, seen from the host (for tests and the
    kubelet's own checks): those whose PID namespace is the namespace init's."""
    init = namespace_init(unshare_pid)
    if init is None:
        return []
    try:
        wanted = os.readlink(f"/proc/{init}/ns/pid")
    except OSError:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "pid") == wanted:
                found.append(int(entry.name))
        except OSError:
            continue
    return found
