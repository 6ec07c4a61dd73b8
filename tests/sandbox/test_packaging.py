"""The sandbox runs in any image with python3: standard library only, and its image is sound."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from cadre.operator.sandbox_builders import SANDBOX_UID

from tests.sandbox.conftest import REPO

SANDBOX = REPO / "operator/cadre/sandbox"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_sandbox_imports_only_the_standard_library_and_itself() -> None:
    outside = set()
    for path in SANDBOX.glob("*.py"):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if name.startswith("cadre.sandbox") or top in sys.stdlib_module_names:
                continue
            outside.add(f"{path.name}: {name}")
    assert outside == set()


def test_the_package_root_it_needs_is_standard_library_only() -> None:
    root = REPO / "operator/cadre/__init__.py"
    assert {n.split(".")[0] for n in imported_modules(root)} <= set(sys.stdlib_module_names)


def dockerfile() -> list[str]:
    return (REPO / "sandbox-image/Dockerfile").read_text().splitlines()


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [line.split()[1] for line in dockerfile() if line.startswith("USER ")]
    assert users, "no USER instruction"
    assert users[-1] not in ("root", "0", "0:0")
    assert users[-1].split(":")[0] == str(SANDBOX_UID), "the uid the pod builder sets"


def test_the_entrypoint_starts_the_sandbox_server() -> None:
    entry = [line for line in dockerfile() if line.startswith(("ENTRYPOINT", "CMD"))]
    assert any('"-m", "cadre.sandbox"' in line for line in entry), entry


def test_the_image_copies_only_the_sandbox_code() -> None:
    copies = [line for line in dockerfile() if line.startswith("COPY")]
    assert copies
    assert all("operator/cadre/sandbox" in c or "operator/cadre/__init__.py" in c for c in copies)


def test_the_image_has_a_workspace_owned_by_the_sandbox_user() -> None:
    text = "\n".join(dockerfile())
    assert "/workspace" in text
    assert f"chown {SANDBOX_UID}:{SANDBOX_UID} /workspace" in text
