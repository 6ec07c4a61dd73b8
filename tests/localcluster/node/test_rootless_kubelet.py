"""The kubelet run as an ordinary user (``nobody``), as on a laptop: what docs/localcluster.md
says holds rootless, checked. A pod still gets a root of its own and a PID namespace (the
user's home and the checkout are not in it), and the kubelet says at start what it cannot
give (per-pod users, a pod network, resource limits)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cadre.localcluster.node import rootfs

from tests.localcluster.conftest import REPO

NOBODY = 65534
SCRIPT = r"""
import json, logging, pathlib, sys, time
import requests
logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stdout)
from cadre.localcluster.runner import threaded_apiserver
folder = pathlib.Path(sys.argv[1])
with threaded_apiserver(crd_dir=pathlib.Path(sys.argv[2]), kubelet_dir=folder / "node") as h:
    (folder / "ca.crt").write_text(h.server.ca_pem)
    http = requests.Session()
    http.trust_env = False
    http.verify = str(folder / "ca.crt")
    http.headers["Authorization"] = "Bearer " + h.server.admin_token
    look = ("import json, os; print('SEEN' + json.dumps({'home': os.path.exists(%r),"
            " 'checkout': os.path.exists(%r), 'pid': os.getpid()}))" % (sys.argv[3], sys.argv[4]))
    pod = {"metadata": {"name": "p"}, "spec": {"restartPolicy": "Never", "containers": [
        {"name": "m", "image": "ghcr.io/cadre-dev/cadre:t", "command": ["python3", "-c", look]}]}}
    pods = h.server.url + "/api/v1/namespaces/default/pods"
    assert http.post(pods, json=pod).status_code == 201
    for _ in range(300):
        if http.get(pods + "/p").json().get("status", {}).get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(0.1)
    print(http.get(pods + "/p/log").text, flush=True)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start the kubelet as nobody")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="util-linux setpriv is missing")
@pytest.mark.skipif(rootfs.available() is not None, reason=f"no bwrap: {rootfs.available()}")
def test_a_rootless_kubelet_still_gives_each_pod_its_own_root() -> None:
    site = next(p for p in sys.path if p.endswith("site-packages"))
    python = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
    readable = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-c",
         "import cadre.localcluster.runner, requests"],
        env={"PYTHONPATH": f"{REPO / 'operator'}:{site}", "PATH": os.environ["PATH"]},
        capture_output=True, check=False,
    )  # fmt: skip
    if not Path(python).exists() or readable.returncode != 0:
        pytest.skip("nobody cannot run this checkout's Python (a checkout in a private folder)")
    folder = Path(tempfile.mkdtemp(prefix="cadre-rootless-"))
    os.chown(folder, NOBODY, NOBODY)
    try:
        result = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python,
             "-c", SCRIPT, str(folder), str(REPO / "crds"), str(Path.home()),
             str(REPO / "tests")],
            env={"PYTHONPATH": f"{REPO / 'operator'}:{site}", "PATH": os.environ["PATH"],
                 "HOME": str(folder)},
            capture_output=True, text=True, timeout=120, check=False, cwd=folder,
        )  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = result.stdout
    assert "SEEN" in out, out + result.stderr
    seen = json.loads(out.split("SEEN", 1)[1].splitlines()[0])
    assert seen == {"home": False, "checkout": False, "pid": 1}, out
    # What it cannot give, it says at start.
    assert "LOCAL PODS SHARE THE HOST NETWORK" in out
    assert "LOCAL PODS HAVE NO RESOURCE LIMITS" in out
    assert "LOCAL PODS SHARE ONE USER" in out
