"""Pod slots reserved machine-wide, so any number of local clusters can run side by side.

A slot is a pod's address (10.232.x.y in a network of its own, or 127.1.x.y on the host's),
its link's name and, when the kubelet runs as root, its range of host user ids. Each kubelet
used to count slots from 1 on its own: a second ``cadre dev up``, or ``make demo`` next to the
test suite, gave its pods the same addresses (every harness
crash-looped on ``bind: address already in use``) and the same host users (one cluster's pod
could read another's files). A slot is now held by an exclusive ``flock`` on its own file in
one folder shared by every user: the kernel releases it when the holder closes it or dies, so
a crashed cluster leaves nothing reserved.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

FOLDER = Path(os.environ.get("CADRE_LOCAL_SLOTS", Path(tempfile.gettempdir()) / "cadre-slots"))
LAST = 65_000
"""Slots 1..LAST: 127.1.0.1 .. 127.1.253.232, host uids below 2**32."""


def usable(slot: int) -> bool:
    """Addresses ending in .0 or .255 are avoided (network and broadcast look-alikes)."""
    return slot & 255 not in (0, 255)


class Slots:
    """Slots held by this process (``shared=False``: only counted here, for simulated pods
    that bind nothing and run nothing)."""

    def __init__(self, shared: bool = True, folder: Path = FOLDER) -> None:
        self.shared = shared
        self.folder = folder
        self._held: dict[int, int] = {}
        if shared:
            folder.mkdir(exist_ok=True)
            if folder.stat().st_uid == os.geteuid():
                # Every user's clusters share it; sticky, so none deletes another's files.
                folder.chmod(0o1777)

    def take(self) -> int:
        """The lowest slot no cluster on this machine holds; RuntimeError when none is left."""
        for slot in range(1, LAST + 1):
            if not usable(slot) or slot in self._held:
                continue
            if not self.shared:
                self._held[slot] = -1
                return slot
            path = self.folder / f"{slot}.lock"
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
            except PermissionError:
                continue  # another user's file this user cannot open: skip it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._held[slot] = fd
            return slot
        raise RuntimeError(f"every pod slot (1..{LAST}) is taken on this machine")

    def release(self, slot: int) -> None:
        fd = self._held.pop(slot, None)
        if fd is not None and fd >= 0:
            os.close(fd)  # closing the descriptor releases its lock

    def release_all(self) -> None:
        for slot in list(self._held):
            self.release(slot)

    def __contains__(self, slot: int) -> bool:
        return slot in self._held
