"""crds/ is generated from the API types; a hand edit or a stale file fails here."""

from __future__ import annotations

from pathlib import Path

from cadre.api.crd import build_all_crds, crd_file_name, render_crd_yaml


def test_crds_folder_holds_exactly_what_make_crds_writes(repo_root: Path) -> None:
    expected = {crd_file_name(c): render_crd_yaml(c) for c in build_all_crds()}
    present = {p.name: p.read_text() for p in (repo_root / "crds").glob("*.yaml")}
    assert sorted(present) == sorted(expected), "run `make crds`: files added or missing"
    stale = [name for name, text in expected.items() if present[name] != text]
    assert not stale, f"run `make crds`: {stale} differ from the API types"


def test_generation_is_deterministic() -> None:
    first = [render_crd_yaml(c) for c in build_all_crds()]
    second = [render_crd_yaml(c) for c in build_all_crds()]
    assert first == second
