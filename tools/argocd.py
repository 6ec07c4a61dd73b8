"""The Argo CD ``resource.customizations`` snippet for Cadre's kinds, built from the Lua health
checks in charts/cadre/argocd/ (``python -m tools.argocd`` writes argocd-cm.yaml beside them;
a test checks it is current and runs the Lua)."""

from __future__ import annotations

from pathlib import Path

import yaml

FOLDER = Path(__file__).resolve().parents[1] / "charts" / "cadre" / "argocd"
SNIPPET = FOLDER / "argocd-cm.yaml"
KINDS = ("Agent", "Team", "Task")


class _Literal(str):
    """A string dumped as a YAML block (|), as people write Lua in argocd-cm."""


yaml.SafeDumper.add_representer(
    _Literal, lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", data, "|")
)


def snippet() -> str:
    data = {
        f"resource.customizations.health.cadre.dev_{kind}": _Literal(
            (FOLDER / f"health-{kind.lower()}.lua").read_text()
        )
        for kind in KINDS
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "argocd-cm",
            "namespace": "argocd",
            "labels": {"app.kubernetes.io/part-of": "argocd"},
        },
        "data": data,
    }
    header = (
        "# Merge into Argo CD's argocd-cm ConfigMap (kubectl -n argocd patch cm argocd-cm"
        " --patch-file argocd-cm.yaml).\n# Generated from health-*.lua by `make manifests`.\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


if __name__ == "__main__":
    SNIPPET.write_text(snippet())
    print(f"wrote {SNIPPET}")
