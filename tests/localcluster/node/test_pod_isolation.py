"""What the process kubelet isolates, tried as an attacker would: each container runs in its
own PID and mount namespaces (a detached process dies with its pod; a pod sees no other pod's
processes), pod logs are the kubelet's only, and two local clusters on one machine never hand
out the same pod address."""

from __future__ import annotations

import json
import secrets
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cadre.localcluster.node import namespaces, rootfs
from cadre.localcluster.runner import ThreadedApiServer, threaded_apiserver

from tests.localcluster.conftest import REPO, Http
from tests.localcluster.node.conftest import eventually, pod_status, python_pod

pytestmark = pytest.mark.skipif(
    namespaces.available() is not None,
    reason=f"PID namespaces are not available here: {namespaces.available()}",
)


def _host_pids_with(marker: str) -> list[int]:
    """Host processes whose command line carries ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _create(http: Http, namespace: str, pod: dict[str, object]) -> None:
    response = http("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
    assert response.status_code == 201, response.text


def test_a_process_detached_in_a_pod_dies_with_the_pod(http: Http, namespace: str) -> None:
    marker = f"{secrets.randbelow(10**6) + 10**6}.5"  # a unique `sleep` argument to find it by
    script = (
        "import subprocess, time\n"
        f"subprocess.Popen(['setsid', 'nohup', 'sleep', '{marker}'], start_new_session=True,\n"
        "                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "time.sleep(600)\n"
    )
    _create(http, namespace, python_pod("detacher", script, terminationGracePeriodSeconds=1))
    eventually(lambda: _host_pids_with(f"sleep\x00{marker}"))
    http("DELETE", f"/api/v1/namespaces/{namespace}/pods/detacher")
    eventually(lambda: not pod_status(http, namespace, "detacher"), timeout=30)
    # Before: the detached sleep survived, kept its host user and could read later pods' /proc.
    eventually(lambda: not _host_pids_with(f"sleep\x00{marker}"), timeout=10)


def test_a_pod_sees_only_its_own_processes(http: Http, namespace: str) -> None:
    marker = f"{secrets.randbelow(10**6) + 10**6}.25"
    _create(http, namespace, python_pod(
        "neighbour", f"import subprocess; subprocess.run(['sleep', '{marker}'])",
        terminationGracePeriodSeconds=1,
    ))  # fmt: skip
    eventually(lambda: _host_pids_with(f"sleep\x00{marker}"))
    looker = (
        "import os, pathlib\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        f"marker = '{marker[:3]}' + '{marker[3:]}'\n"  # not in this script's own command line
        "seen = [p for p in pids\n"
        "        if marker.encode() in pathlib.Path(f'/proc/{p}/cmdline').read_bytes()]\n"
        "print('pids', len(pids), 'seen', len(seen), flush=True)\n"
    )
    _create(http, namespace, python_pod("looker", looker, restartPolicy="Never"))
    eventually(
        lambda: pod_status(http, namespace, "looker").get("phase") == "Succeeded", timeout=30
    )
    said = http("GET", f"/api/v1/namespaces/{namespace}/pods/looker/log").text
    count, seen = said.split()[1], said.split()[3]
    assert seen == "0", said  # the neighbour's process is not in this pod's /proc
    assert int(count) <= 3, said  # its own python (PID 1) and little else
    http("DELETE", f"/api/v1/namespaces/{namespace}/pods/neighbour")


def test_pod_logs_are_readable_by_the_kubelet_only(
    http: Http, namespace: str, apiserver: ThreadedApiServer
) -> None:
    _create(http, namespace, python_pod("talker", "print('secret transcript')",
                                        restartPolicy="Never"))  # fmt: skip
    eventually(lambda: pod_status(http, namespace, "talker").get("phase") == "Succeeded")
    assert apiserver.kubelet is not None
    logs = list(apiserver.kubelet.state_dir.glob("pods/*/logs/main-0.log"))
    owned = [p for p in logs if "secret transcript" in p.read_text()]
    assert owned
    for path in owned:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert (
        "secret transcript" in http("GET", f"/api/v1/namespaces/{namespace}/pods/talker/log").text
    )  # the API server's log subresource still serves them


@pytest.fixture
def second_cluster(tmp_path: Path) -> Iterator[ThreadedApiServer]:
    with threaded_apiserver(crd_dir=REPO / "crds", kubelet_dir=tmp_path / "node2") as handle:
        yield handle


def test_two_local_clusters_never_share_a_pod_address(
    http: Http, namespace: str, second_cluster: ThreadedApiServer, tmp_path: Path
) -> None:
    """Both clusters' pods bind their own address's port 8080: before, the second cluster's
    pod got the first's address and crash-looped on EADDRINUSE."""
    server = second_cluster.server
    assert server is not None
    ca = tmp_path / "ca2.crt"
    ca.write_text(server.ca_pem)
    other = Http(server.url, ca, server.admin_token)
    binder = (
        "import os, socket, time\n"
        # SO_REUSEADDR as servers set it: an earlier pod's closed connections (TIME_WAIT) on
        # a reused address do not count, another listener does.
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind((os.environ['POD_IP'], 8080)); s.listen()\n"
        "print('bound', flush=True); time.sleep(600)\n"
    )
    pod_ip = {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
    pod = python_pod("binder", binder, terminationGracePeriodSeconds=1,
                     container={"env": [pod_ip]})  # fmt: skip
    _create(http, namespace, pod)
    _create(other, "default", pod)
    for client, where in ((http, namespace), (other, "default")):
        log = f"/api/v1/namespaces/{where}/pods/binder/log"
        eventually(lambda c=client, p=log: "bound" in c("GET", p).text, timeout=30)
    first = pod_status(http, namespace, "binder")
    second = pod_status(other, "default", "binder")
    assert first["podIP"] != second["podIP"]
    for status in (first, second):
        assert status["containerStatuses"][0]["restartCount"] == 0, status
    http("DELETE", f"/api/v1/namespaces/{namespace}/pods/binder")


@pytest.mark.skipif(rootfs.available() is not None, reason=f"no bwrap here: {rootfs.available()}")
def test_a_pod_sees_only_the_system_cadre_and_its_own_volumes(
    http: Http, namespace: str, apiserver: ThreadedApiServer
) -> None:
    """The attack: read the user's home, the checkout, /tmp, the cluster's state folder or
    another pod's volume. None is in the container's root; the root is read-only where the
    pod asks (readOnlyRootFilesystem), its volumes are writable."""
    assert apiserver.kubelet is not None
    state = apiserver.kubelet.state_dir
    _create(http, namespace, python_pod("neighbour", "import time; time.sleep(600)",
                                        terminationGracePeriodSeconds=0))  # fmt: skip
    eventually(lambda: pod_status(http, namespace, "neighbour").get("phase") == "Running")
    other = http("GET", f"/api/v1/namespaces/{namespace}/pods/neighbour").json()["metadata"]["uid"]
    secret_in_tmp = Path(tempfile.gettempdir()) / f"cadre-test-{secrets.token_hex(4)}"
    secret_in_tmp.write_text("host secret")
    looked_at = [str(Path.home()), str(REPO / "tests"), str(REPO / "pyproject.toml"),
                 str(secret_in_tmp), str(state), str(state / "pods" / other)]  # fmt: skip
    script = (
        "import json, os\n"
        f"found = {{p: os.path.exists(p) for p in {looked_at!r}}}\n"
        "writes = {}\n"
        "for path in ('/etc/x', '/usr/x', '/x', '/work/x', '/data/x'):\n"
        "    try:\n"
        "        open(path, 'w').write('x'); writes[path] = 'written'\n"
        "    except OSError as err:\n"
        "        writes[path] = type(err).__name__\n"
        "print('SEEN' + json.dumps({'found': found, 'writes': writes}), flush=True)\n"
    )
    pod = python_pod(
        "looker", script, restartPolicy="Never",
        volumes=[{"name": "data", "emptyDir": {}}],
        container={"volumeMounts": [{"name": "data", "mountPath": "/data"}],
                   "securityContext": {"readOnlyRootFilesystem": True}},
    )  # fmt: skip
    _create(http, namespace, pod)
    log = f"/api/v1/namespaces/{namespace}/pods/looker/log"
    text = eventually(lambda: "SEEN" in (t := http("GET", log).text) and t, timeout=30)
    seen = json.loads(text.split("SEEN", 1)[1])
    secret_in_tmp.unlink()
    http("DELETE", f"/api/v1/namespaces/{namespace}/pods/neighbour")
    assert seen["found"] == dict.fromkeys(looked_at, False), seen
    assert seen["writes"]["/data/x"] == "written", seen
    for path in ("/etc/x", "/usr/x", "/x", "/work/x"):
        assert seen["writes"][path] in ("OSError", "PermissionError", "FileNotFoundError"), seen
