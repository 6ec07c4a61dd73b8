"""The local cluster runs Cadre's images from this checkout; what it runs must be what the
image would run (ENTRYPOINT, USER, WORKDIR, ENV of the Dockerfile)."""

from __future__ import annotations

import json
import re

import pytest
from cadre.localcluster.node.images import find_image

from tests.localcluster.conftest import REPO


def _dockerfile(path: str) -> dict[str, str]:
    text = (REPO / path).read_text()
    text = "FROM" + text.rsplit("\nFROM", 1)[-1]  # the final stage is the image
    joined = re.sub(r"\\\n\s*", " ", text)
    found: dict[str, str] = {}
    for line in joined.splitlines():
        match = re.match(r"^(ENTRYPOINT|USER|WORKDIR|ENV)\s+(.*)$", line.strip())
        if match:
            found[match[1]] = (found.get(match[1], "") + " " + match[2]).strip()
    return found


@pytest.mark.parametrize(
    ("dockerfile", "reference"),
    [("sandbox-image/Dockerfile", "ghcr.io/cadre-dev/sandbox:1.2.3"),
     ("operator/Dockerfile", "ghcr.io/cadre-dev/cadre:1.2.3")],
)  # fmt: skip
def test_an_image_entry_mirrors_its_dockerfile(dockerfile: str, reference: str) -> None:
    docker = _dockerfile(dockerfile)
    image = find_image(reference)
    assert image is not None
    assert list(image.entrypoint) == json.loads(docker["ENTRYPOINT"])
    assert docker["USER"] == f"{image.user}:{image.user}"
    assert docker["WORKDIR"] == image.workdir
    env = dict(pair.split("=", 1) for pair in docker["ENV"].split())
    for key, value in image.env.items():
        assert env[key] == value, key


def test_the_chart_runs_the_operator_as_its_image_user() -> None:
    image = find_image("ghcr.io/cadre-dev/cadre:1.2.3")
    assert image is not None
    chart = (REPO / "charts/cadre/templates/deployment.yaml").read_text()
    assert f"runAsUser: {image.user}" in chart


def test_image_references_resolve_whatever_the_tag() -> None:
    assert find_image("ghcr.io/cadre-dev/cadre") is not None
    assert find_image("ghcr.io/cadre-dev/cadre:0.1.0@sha256:" + "a" * 64) is not None
    assert find_image("ghcr.io/cadre-dev/cadre-evil:1") is None
    assert find_image("nginx:1.27") is None
