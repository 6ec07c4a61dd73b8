"""Each container in its own PID and mount namespace, as a container runtime would run it.

A process of a pod sees only its pod's container processes (``/proc`` is remounted inside),
and the whole namespace dies with its first process: deleting a pod or restarting a container
ends every process of it, including ones detached with ``setsid``/``nohup``/a double fork (the
attack this closes: such a process outlived its sandbox pod and read a later harness's
``/proc/PID/environ``). util-linux ``unshare`` does it, inside a user namespace of its own
(``--map-current-user``), which works for unprivileged users where the kernel allows it, so
the same command serves a root kubelet (pods as their own host users) and a rootless one.

As in a container, the first process is PID 1 of its namespace: the kernel gives it no
default action for SIGTERM, so a program that does not handle SIGTERM keeps running until the
grace period ends and the kubelet sends SIGKILL, exactly as on a real node.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

UNSHARE = shutil.which("unshare") or "unshare"
NSENTER = shutil.which("nsenter") or "nsenter"


def _base() -> list[str]:
    # A user namespace of its own (the user mapped to itself) lets any user create the PID
    # namespace, so unshare runs already as the pod's user: --kill-child then holds (a
    # credential change after it, as setpriv would make, clears the parent-death signal), and
    # a killed unshare takes its container with it instead of leaving it orphaned.
    return [UNSHARE, "--user", "--map-current-user", "--pid", "--fork", "--kill-child",
            "--mount-proc"]  # fmt: skip


@functools.cache
def available() -> str | None:
    """None when namespaces work here, else why not (said once at the kubelet's start)."""
    if shutil.which("unshare") is None:
        return "util-linux unshare is not installed"
    try:
        result = subprocess.run(
            [*_base(), "true"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unshare failed: {err}"
    if result.returncode != 0:
        return f"unshare failed: {result.stderr.strip() or result.returncode}"
    return None


def wrap(argv: list[str]) -> list[str]:
    """``argv`` run as PID 1 of new user, PID and mount namespaces (started as the pod's user
    by the kubelet, as before)."""
    return [*_base(), *argv]


def as_user(uid: int | None, gid: int | None, argv: list[str]) -> list[str]:
    """``argv`` run by a root process that first becomes ``uid``/``gid`` with no
    supplementary groups (after it joined what needs root: cgroups, the pod's network)."""
    if uid is None:
        return argv
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", *argv]


def in_network(netns: str | None, argv: list[str]) -> list[str]:
    """``argv`` run in the pod's network namespace (``netns``: its path; None: the host's).
    nsenter execs without forking for a network namespace, so the PID stays the same."""
    if netns is None:
        return argv
    return [NSENTER, f"--net={netns}", "--", *argv]


def namespace_init(unshare_pid: int) -> int | None:
    """The container's first process (PID 1 inside): the only child of ``unshare``. None when
    it has not been forked yet or is gone."""
    try:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None
