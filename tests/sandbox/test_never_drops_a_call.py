"""No input makes the sandbox close a connection unanswered: what the system refuses (EACCES,
EROFS, ENOTDIR...) is a tool result the model reads, a pathological grep costs at most its time
limit while the server keeps answering, and broken requests are refused before reading."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.conftest import REPO, SandboxProcess

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"


def _refused(result: dict[str, Any], code: str, path: str) -> None:
    assert result["is_error"] is True, result
    assert result["details"]["errno"] == code, result
    assert code in result["content"], result["content"]
    assert path in result["content"], result["content"]


def test_a_write_below_a_file_is_a_result_naming_the_error(sandbox: SandboxProcess) -> None:
    assert sandbox.call("t1", "write", path="notes.txt", content="x")[0] == 200
    status, result = sandbox.call("t2", "write", path="notes.txt/child", content="y")
    assert status == 200
    _refused(result, "EEXIST", "notes.txt/child")  # the folder it needs is a file
    assert "already has that name" in result["content"]
    # Stored like any result: the same id answers the same without running again.
    assert sandbox.call("t2", "write", path="notes.txt/child", content="y")[1]["replayed"]


@pytest.fixture
def unprivileged(tmp_path: Path) -> Iterator[SandboxProcess]:
    """A sandbox whose user the kernel refuses things: ``nobody`` when the tests run as root
    (root may read any file), else the test's own user."""
    if os.geteuid() != 0:
        workspace = tmp_path / "workspace"
        workspace.mkdir()
        server = SandboxProcess(workspace)
    else:
        if not (shutil.which("setpriv") and Path(SYSTEM_PYTHON).exists()):
            pytest.skip("needs setpriv and /usr/bin/python3 to run the sandbox as nobody")
        drop = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        probe = subprocess.run(
            [*drop, SYSTEM_PYTHON, "-S", "-c", "import sys; assert sys.version_info >= (3, 11)"],
            env={"PYTHONPATH": str(REPO / "operator")},
            capture_output=True,
        )
        if probe.returncode != 0:
            pytest.skip(f"nobody cannot run Cadre from {REPO}: {probe.stderr.decode()[-200:]}")
        # pytest's own folders are private to root; nobody needs a path it can walk.
        folder = Path(tempfile.mkdtemp(prefix="cadre-nobody-"))
        folder.chmod(0o755)
        workspace = folder / "workspace"
        workspace.mkdir(mode=0o777)
        workspace.chmod(0o777)
        server = SandboxProcess(workspace, prefix=drop, python=SYSTEM_PYTHON)
    secret = workspace / "secret.txt"
    secret.write_text("only root\n")
    if os.geteuid() != 0:
        secret.chmod(0)
    else:
        secret.chmod(0o600)
    try:
        server.start()
        yield server
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop(signal.SIGKILL)
        secret.chmod(0o600)
        if os.geteuid() == 0:
            shutil.rmtree(workspace.parent, ignore_errors=True)


def test_what_the_sandboxs_user_may_not_touch_is_a_result(unprivileged: SandboxProcess) -> None:
    status, read = unprivileged.call("r1", "read", path="secret.txt")
    assert status == 200
    _refused(read, "EACCES", "secret.txt")
    status, edit = unprivileged.call(
        "e1", "edit", path="secret.txt", old_string="only", new_string="any"
    )
    assert status == 200
    assert edit["is_error"], edit
    assert edit["details"]["errno"] == "EACCES", edit
    if os.geteuid() == 0:  # as nobody, /etc is not writable
        status, write = unprivileged.call("w1", "write", path="/etc/cadre-test-x", content="x")
        assert status == 200
        _refused(write, "EACCES", "/etc/cadre-test-x")
        assert not Path("/etc/cadre-test-x").exists()
    # The server is still there and still works.
    assert unprivileged.call("w2", "write", path="ok.txt", content="fine")[1]["is_error"] is False


def test_a_read_only_file_system_is_a_result(tmp_path: Path) -> None:
    """As on a cluster with readOnlyRootFilesystem: a folder mounted read-only in the sandbox's
    own mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("needs util-linux unshare for a private read-only mount")
    frozen = tmp_path / "frozen"
    frozen.mkdir()
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    mount = f'mount --bind {frozen} {frozen} && mount -o remount,bind,ro {frozen} && exec "$@"'
    prefix = ["unshare", "--mount", "--map-root-user", "sh", "-c", mount, "sh"]
    check = subprocess.run([*prefix, "true"], capture_output=True)
    if check.returncode != 0:
        pytest.skip(f"cannot make a private read-only mount here: {check.stderr.decode()}")
    server = SandboxProcess(workspace, prefix=prefix)
    try:
        server.start()
        status, result = server.call("w1", "write", path=str(frozen / "x.txt"), content="x")
        assert status == 200
        _refused(result, "EROFS", str(frozen / "x.txt"))
        assert "read-only" in result["content"]
        assert server.call("w2", "write", path="x.txt", content="x")[1]["is_error"] is False
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop(signal.SIGKILL)


def test_a_backtracking_grep_costs_its_time_limit_and_nothing_else(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "a.txt").write_text("a" * 40 + "!\n")
    server = SandboxProcess(workspace, extra_env={"CADRE_SANDBOX_GREP_TIMEOUT_SECONDS": "3"})
    try:
        server.start()
        answer: dict[str, Any] = {}

        def slow() -> None:
            answer["reply"] = server.call("g1", "grep", pattern="(a+)+$")

        worker = threading.Thread(target=slow)
        worker.start()
        health = 0
        while worker.is_alive():  # the server answers meanwhile, again and again
            assert server.request("GET", "/healthz", token=None)[0] == 200
            health += 1
            assert server.call(f"w{health}", "write", path="b.txt", content="b")[0] == 200
            worker.join(0.1)
        assert health >= 2
        status, result = answer["reply"]
        assert status == 200
        assert result["is_error"], result
        assert result["details"]["timed_out"], result
        assert "backtrack" in result["content"]
        # An ordinary pattern still works, and SIGTERM during a slow grep is heeded promptly.
        assert server.call("g2", "grep", pattern="a!$")[1]["details"]["matches"] == 1
        worker = threading.Thread(target=lambda: server.call("g3", "grep", pattern="(a+)+$"))
        worker.start()
        time.sleep(0.5)  # let the grep start; the exit below is what is checked
        assert server.stop() == 0
        worker.join(10)
    finally:
        if server.proc and server.proc.poll() is None:
            server.stop(signal.SIGKILL)


@pytest.mark.parametrize("length", ["-1", "abc", "+5", "1_0"])
def test_a_broken_content_length_is_refused_before_reading(
    sandbox: SandboxProcess, length: str
) -> None:
    with socket.create_connection(("127.0.0.1", sandbox.port), timeout=30) as conn:
        request = (
            "POST /v1/tool-calls HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {sandbox.token}\r\nContent-Length: {length}\r\n\r\n"
        )
        conn.sendall(request.encode() + b"{}")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), reply
    assert b"Content-Length" in body


def test_json_nested_too_deeply_is_a_400(sandbox: SandboxProcess) -> None:
    status, body = sandbox.request("POST", "/v1/tool-calls", raw=b"[" * 200_000)
    assert status == 400
    assert "nested too deeply" in body["error"]["message"]
    assert sandbox.request("GET", "/healthz", token=None)[0] == 200
