"""Egress by host name end to end in the local cluster, where pod networks are isolated and
NetworkPolicies enforced, so a bypass really fails: the operator, a harness pod running the
egress proxy, a sandbox pod, the scripted model, and real HTTPS servers on the node (a package
index and a git host, each with its own credential, under names the kubelet's hosts file
gives every pod). In the sandbox, the real ``pip download`` from the index allowed by name
succeeds, the same from a host not allowed fails with the proxy's reason, a connection that
skips the proxy fails, the real ``git clone`` from the host that requires a token succeeds,
and a search for either token over everything the sandbox can read, and over its harness's
session log, finds nothing. Each server saw its own credential only."""

from __future__ import annotations

import base64
import io
import shutil
import ssl
import subprocess
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from cadre.api.names import TOOL_CREDENTIAL_LABEL
from cadre.localcluster.node import network, rootfs

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Served
from tests.operator.conftest import (
    NS,
    create_agent,
    create_task,
    ended,
    local_cluster,
    model_key_secret,
    operating,
)

pytestmark = pytest.mark.skipif(
    network.probe() is not None or rootfs.available() is not None or not shutil.which("git"),
    reason="needs pod networks (root, nftables), bwrap and git",
)

INDEX_TOKEN = "idx-" + "7f3a9c" * 4
GIT_TOKEN = "ghp-" + "b81d2e" * 4
NAMES = {"pypi.test": network.NODE_IP, "git.test": network.NODE_IP}


def _wheel() -> bytes:
    """A minimal real wheel of ``tinypkg`` 1.0."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as wheel:
        wheel.writestr("tinypkg/__init__.py", "VALUE = 1\n")
        info = "tinypkg-1.0.dist-info"
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                       "Root-Is-Purelib: true\nTag: py3-none-any\n")  # fmt: skip
        wheel.writestr(f"{info}/RECORD", "")
    return out.getvalue()


def _bare_repo(folder: Path) -> Path:
    """A bare git repository with one commit, ready for git's dumb HTTP protocol."""
    work, bare = folder / "work", folder / "repo.git"
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README").write_text("cloned through the egress proxy\n")
    subprocess.run([*git, "-C", str(work), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "first"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True)
    return bare


@dataclass
class Hosts:
    port: int
    ca_pem: bytes
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    """(host, Authorization) of every request."""


@pytest.fixture
async def hosts(tmp_path: Path) -> AsyncIterator[Hosts]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*NAMES).configure_cert(context)
    served = Hosts(0, ca.cert_pem.bytes())
    bare = _bare_repo(tmp_path)
    wheel = _wheel()
    basic = "Basic " + base64.b64encode(f"ci:{INDEX_TOKEN}".encode()).decode()

    async def handle(request: web.Request) -> web.StreamResponse:
        host = request.host.split(":")[0]
        authorization = request.headers.get("Authorization")
        served.seen.append((host, authorization))
        wanted = basic if host == "pypi.test" else f"Bearer {GIT_TOKEN}"
        if authorization != wanted:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="t"'})
        path = request.path
        if host == "pypi.test" and path.rstrip("/") == "/simple/tinypkg":
            link = (
                '<a href="/packages/tinypkg-1.0-py3-none-any.whl">tinypkg-1.0-py3-none-any.whl</a>'
            )
            return web.Response(text=f"<html><body>{link}</body></html>", content_type="text/html")
        if host == "pypi.test" and path == "/packages/tinypkg-1.0-py3-none-any.whl":
            return web.Response(body=wheel, content_type="application/octet-stream")
        if host == "git.test" and path.startswith("/repo.git/"):
            target = (bare / path.removeprefix("/repo.git/")).resolve()
            if target.is_file() and target.is_relative_to(bare.resolve()):
                return web.Response(body=target.read_bytes(), content_type="text/plain")
        return web.Response(status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    served.port = runner.addresses[0][1]
    yield served
    await runner.cleanup()


@pytest.fixture
def egress_cluster(tmp_path: Path) -> Iterator[Served]:
    with local_cluster(tmp_path, hosts=NAMES) as served:
        yield served


def _tokens_search() -> str:
    # Assembled at run time: neither token appears in a command, so in nothing the model sent.
    halves = [(INDEX_TOKEN[:8], INDEX_TOKEN[8:]), (GIT_TOKEN[:8], GIT_TOKEN[8:])]
    searches = []
    for first, second in halves:
        searches.append(
            f'T="{first}"; T="${{T}}{second}"; '
            # Every writable place and what the pod was given (the image's own read-only
            # /usr and Cadre's code at /cadre predate the token); then every environment.
            'grep -rIl -e "$T" /workspace /tmp /var /etc /run /dev/shm 2>/dev/null | head; '
            'cat /proc/[0-9]*/environ 2>/dev/null | tr "\\0" "\\n" | grep -c -e "$T"; '
            'env | grep -c -e "$T"'
        )
    return "; ".join(searches) + "; echo SEARCHED"


def _steps(port: int) -> list[dict[str, Any]]:
    pip = "python3 -m pip download --no-deps --no-cache-dir --disable-pip-version-check -d /tmp/dl"
    commands = [
        f"{pip} --index-url https://pypi.test:{port}/simple/ tinypkg && ls /tmp/dl",
        # One retry: pip shows the proxy's refusal in its retry warning.
        f"{pip} --retries 1 --index-url https://evil.test:{port}/simple/ tinypkg; echo EXIT=$?",
        f"git clone -q https://git.test:{port}/repo.git /tmp/repo && cat /tmp/repo/README",
        f"python3 -c \"import socket; socket.create_connection(('{network.NODE_IP}', {port}), 5)\""
        " 2>&1 | tail -1",
        _tokens_search(),
    ]
    return [
        {
            "text": "Fetching.",
            "tool_uses": [{"name": "bash", "input": {"command": c}} for c in commands],
        },
        {"text": "Done."},
    ]


async def test_a_sandbox_reaches_allowed_hosts_with_credentials_it_never_sees(
    egress_cluster: Served, scripted: ModelFactory, hosts: Hosts, tmp_path: Path
) -> None:
    http = egress_cluster.http
    url, model = await scripted({"agents": {"engineer": _steps(hosts.port)}})
    for name, token in (("index", INDEX_TOKEN), ("git", GIT_TOKEN)):
        secret = {"metadata": {"name": name, "labels": {TOOL_CREDENTIAL_LABEL: "true"}},
                  "stringData": {"token": token}}  # fmt: skip
        assert http("POST", f"/api/v1/namespaces/{NS}/secrets", secret).status_code == 201
    http("POST", f"/api/v1/namespaces/{NS}/secrets", model_key_secret("anthropic", "sk-test"))
    index, git = f"pypi.test:{hosts.port}", f"git.test:{hosts.port}"
    egress = {
        "mode": "Hosts", "hosts": [index, git],
        "credentials": [
            {"host": index, "secretRef": {"name": "index", "key": "token"}, "scheme": "Basic",
             "username": "ci"},
            {"host": git, "secretRef": {"name": "git", "key": "token"}, "scheme": "Bearer"},
        ],
        "caBundle": base64.b64encode(hosts.ca_pem).decode(),
    }  # fmt: skip
    async with operating(egress_cluster, tmp_path):
        create_agent(http, url, sandbox={"egress": egress})
        create_task(http, "fetch", "Fetch the package and the repository.")
        done = await until(lambda: ended(http, "fetch"), within=180)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    results = [
        block["content"]
        for request in model.requests
        for message in request["messages"] if message["role"] == "user"
        and isinstance(message["content"], list)
        for block in message["content"] if block.get("type") == "tool_result"
    ]  # fmt: skip
    text = "\n---\n".join(str(r) for r in results)
    assert "tinypkg-1.0-py3-none-any.whl" in text, text
    assert f"evil.test:{hosts.port} is not an egress host of this Agent" in text, text
    assert "cloned through the egress proxy" in text, text
    assert "ConnectionRefusedError" in text, text  # the direct connection, past the proxy
    assert "SEARCHED" in text, text
    searched = text.split("SEARCHED")[0].rsplit("---", 1)[-1]
    assert [line for line in searched.split() if line.strip()].count("0") >= 4, searched
    for token in (INDEX_TOKEN, GIT_TOKEN):
        assert token not in str(model.requests)
    # Each credential went to its own host only.
    assert {auth for host, auth in hosts.seen if host == "git.test"} == {f"Bearer {GIT_TOKEN}"}
    assert all(auth is None or auth.startswith("Basic ")
               for host, auth in hosts.seen if host == "pypi.test")  # fmt: skip
    assert any(auth and auth.startswith("Basic ") for _, auth in hosts.seen)
    # Every connection is in the session log, with no credential's value in it.
    logs = list(
        (tmp_path / "node" / "claims" / NS).glob("state-harness-engineer-0-*/sessions/*/*.jsonl")
    )
    assert logs, list((tmp_path / "node").rglob("*.jsonl"))
    log_text = "".join(p.read_text() for p in logs)
    assert '"type": "span.egress"' in log_text or '"type":"span.egress"' in log_text
    assert "evil.test" in log_text
    assert INDEX_TOKEN not in log_text
    assert GIT_TOKEN not in log_text
    # The refusal is a Warning Event on the Task, written by the harness (its Role allows it);
    # pip's retry of the same host counts on the one Event rather than adding another.
    events = http("GET", f"/api/v1/namespaces/{NS}/events").json()["items"]
    refused = [e for e in events if e["reason"] == "EgressRefused"]
    assert refused, [(e["reason"], e["message"]) for e in events]
    assert {e["involvedObject"]["name"] for e in refused} == {"fetch"}
    assert {e["type"] for e in refused} == {"Warning"}
    assert {e["source"]["component"] for e in refused} == {"cadre-harness"}
    assert any(f"evil.test:{hosts.port}" in e["message"] for e in refused)
    assert len({e["message"] for e in refused}) == len(refused)
