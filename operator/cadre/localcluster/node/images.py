"""The container images the process kubelet can run, and how: Cadre's own images only, run
from this installation of Cadre instead of from an image filesystem.

Each entry mirrors its Dockerfile (entrypoint, environment, working directory, user), and the
interpreter is a Python every pod user may execute, with this installation's packages on its
path. Any other image leaves its pod Pending with ``ErrImagePull`` and a message saying why.
"""

from __future__ import annotations

import os
import site
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cadre

PACKAGE_ROOT = Path(cadre.__file__).resolve().parent.parent
"""The folder holding the ``cadre`` package (``operator/`` in a checkout)."""


@dataclass(frozen=True)
class Image:
    """What a Dockerfile would give a container: ENTRYPOINT, ENV, WORKDIR, USER."""

    repository: str
    entrypoint: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: int = 10001


CATALOG = (
    Image(
        "ghcr.io/cadre-dev/sandbox",
        ("python3", "-m", "cadre.sandbox"),
        {"CADRE_WORKSPACE": "/workspace", "HOME": "/tmp", "PYTHONUNBUFFERED": "1"},  # noqa: S108
        "/workspace",
        10002,  # sandbox-image/Dockerfile's USER, not the harness's
    ),
    Image("ghcr.io/cadre-dev/cadre", ("cadre",), {"HOME": "/tmp", "PYTHONUNBUFFERED": "1"}),  # noqa: S108
)


def find_image(reference: str) -> Image | None:
    """The catalog entry for ``repository[:tag][@digest]``, whatever the tag."""
    repository = reference.split("@", 1)[0]
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:
        repository = repository[: -(len(last) - last.index(":"))]
    return next((image for image in CATALOG if image.repository == repository), None)


def _world_executable(path: Path) -> bool:
    """Whether any user can reach and run ``path``: every folder on the way searchable by
    others, and the target itself executable (a file) or listable (a folder) by others."""
    resolved = path.resolve()
    if any(not part.stat().st_mode & stat.S_IXOTH for part in resolved.parents):
        return False
    needed = stat.S_IXOTH | (stat.S_IROTH if resolved.is_dir() else 0)
    return resolved.stat().st_mode & needed == needed


@dataclass(frozen=True)
class Runtime:
    """The interpreter and import path every Cadre container runs with."""

    python: str
    pythonpath: tuple[str, ...]
    shared: bool
    """Whether users other than the kubelet's can run it (else containers run as the kubelet)."""

    def command(self, argv: list[str]) -> list[str]:
        """A container's argv with the image's programs mapped to this installation."""
        if not argv:
            return argv
        program = argv[0]
        if program in ("python", "python3", "python3.11") or program.endswith("/python3"):
            return [self.python, *argv[1:]]
        if program == "cadre":
            return [self.python, "-c", "from cadre.cli.main import main; main()", *argv[1:]]
        return argv


def detect_runtime() -> Runtime:
    """Prefer a system Python of the same version (others can execute it: pods run as their
    own users), with this environment's site-packages and Cadre's folder on the path."""
    paths = [str(PACKAGE_ROOT), *site.getsitepackages()]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path("/usr/bin") / version, Path("/usr/local/bin") / version):
        if candidate.exists() and _world_executable(candidate):
            shared = all(_world_executable(Path(p)) for p in paths if Path(p).exists())
            return Runtime(str(candidate), tuple(paths), shared)
    own = Path(sys.executable)
    return Runtime(str(own), tuple(paths), _world_executable(own))


def pythonpath_env(runtime: Runtime) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join(runtime.pythonpath)}
