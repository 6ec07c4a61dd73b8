"""Plain manifests for `kubectl apply`, rendered from the Helm chart with the real Helm engine
(helm-python-sdk): ``python -m tools.manifests`` writes manifests/cadre.yaml; a test checks it
is up to date. The chart is the one source; these are for users without Helm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "cadre"
OUTPUT = REPO / "manifests" / "cadre.yaml"
NAMESPACE = "cadre-system"
RELEASE = "cadre"
ORDER = ["Namespace", "CustomResourceDefinition", "ValidatingAdmissionPolicy",
         "ValidatingAdmissionPolicyBinding", "ServiceAccount", "ClusterRole",
         "ClusterRoleBinding", "Role", "RoleBinding", "NetworkPolicy", "ConfigMap", "Service",
         "Deployment", "Ingress", "ServiceMonitor", "PodMonitor", "PrometheusRule"]  # fmt: skip
HEADER = (
    "# Cadre for `kubectl apply --server-side -f`: the CRDs and the operator in namespace"
    f" {NAMESPACE}.\n# Generated from charts/cadre by `make manifests`; do not edit by hand.\n"
)


def render(
    values: dict[str, Any] | None = None, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """Every object the chart installs with these values, CRDs included, in apply order."""
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name=RELEASE, namespace=namespace)
        crds = [yaml.safe_load(crd["data"]) for crd in chart.crds]
    objects = [
        doc
        for name, text in sorted(rendered.items())
        if not name.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    return sorted(crds + objects, key=lambda o: (ORDER.index(o["kind"]), o["metadata"]["name"]))


def plain_manifests() -> str:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    documents = [namespace, *render()]
    return HEADER + "---\n".join(yaml.safe_dump(d, sort_keys=False) for d in documents)


if __name__ == "__main__":
    OUTPUT.write_text(plain_manifests())
    print(f"wrote {OUTPUT.relative_to(REPO)}")
