"""Bad requests get a 4xx naming the problem and run nothing; no token, nothing runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sandbox.conftest import REPO, SandboxProcess


def write_call(tool_use_id: str = "toolu_w") -> dict[str, object]:
    return {"tool_use_id": tool_use_id, "name": "write", "input": {"path": "x", "content": "1"}}


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_a_call_without_the_session_token_gets_401_and_runs_nothing(
    sandbox: SandboxProcess, token: str | None
) -> None:
    status, body = sandbox.request("POST", "/v1/tool-calls", write_call(), token=token)
    assert status == 401
    assert body["error"]["type"] == "unauthorized"
    assert not (sandbox.workspace / "x").exists()
    status, _ = sandbox.request("GET", "/v1/tools", token=token)
    assert status == 401


def test_health_needs_no_token(sandbox: SandboxProcess) -> None:
    assert sandbox.request("GET", "/healthz", token=None) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"tool_use_id": "t1", "name": "teleport", "input": {}}, 404, "unknown tool 'teleport'"),
        ({"tool_use_id": "t2", "name": "bash", "input": {"command": 5}}, 400, "input.command"),
        ({"tool_use_id": "t3", "name": "bash", "input": {}}, 400, "input.command: required"),
        (
            {"tool_use_id": "t4", "name": "bash", "input": {"command": "true", "shell": "zsh"}},
            400,
            "input.shell: unknown field",
        ),
        (
            {"tool_use_id": "t5", "name": "bash", "input": {"command": "true", "timeout": 9999}},
            400,
            "input.timeout: must be between 1 and 600",
        ),
        ({"tool_use_id": "t6", "name": "bash", "input": "ls"}, 400, "input: expected an object"),
        ({"name": "bash", "input": {"command": "true"}}, 400, "tool_use_id: required"),
        ({"tool_use_id": "../../etc", "name": "bash", "input": {}}, 400, "tool_use_id"),
        ({"tool_use_id": "t7", "input": {}}, 400, "name: required"),
        ({"tool_use_id": "t8", "name": "read", "input": {"path": "nope.txt"}}, 422, "nope.txt"),
        ({"tool_use_id": "t9", "name": "grep", "input": {"pattern": "("}}, 400, "input.pattern"),
        (
            {"tool_use_id": "t10", "name": "glob", "input": {"pattern": "*", "path": "no"}},
            422,
            "no",
        ),
        (
            {"tool_use_id": "t11", "name": "edit", "input": {"path": "x", "old_string": ""}},
            400,
            "input.new_string: required",
        ),
    ],
)
def test_bad_tool_calls_are_refused_with_a_message_naming_the_problem(
    sandbox: SandboxProcess, body: dict[str, object], status: int, words: str
) -> None:
    got_status, got = sandbox.request("POST", "/v1/tool-calls", body)
    assert got_status == status
    assert words in got["error"]["message"]
    # Nothing ran: the workspace holds nothing but the sandbox's own records.
    assert [p.name for p in sandbox.workspace.iterdir()] in ([], [".cadre-sandbox"])
    again_status, again = sandbox.request("POST", "/v1/tool-calls", body)
    assert (again_status, again) == (got_status, got), "the same call gets the same answer"


def test_malformed_json_is_400(sandbox: SandboxProcess) -> None:
    status, body = sandbox.request("POST", "/v1/tool-calls", raw=b'{"tool_use_id": ')
    assert status == 400
    assert body["error"]["message"].startswith("body: invalid JSON")


def test_a_json_array_is_400(sandbox: SandboxProcess) -> None:
    status, body = sandbox.request("POST", "/v1/tool-calls", raw=b"[1]")
    assert (status, body["error"]["message"]) == (400, "body: expected a JSON object")


def test_oversized_bodies_are_refused_unread(sandbox: SandboxProcess) -> None:
    status, body = sandbox.request(
        "POST", "/v1/tool-calls", raw=b"{}", headers={"Content-Length": str(64 * 1024 * 1024)}
    )
    assert status == 413
    assert "more than the limit" in body["error"]["message"]


def test_writes_larger_than_the_cap_are_413(sandbox: SandboxProcess) -> None:
    call = {
        "tool_use_id": "big",
        "name": "write",
        "input": {"path": "b", "content": "x" * 11_000_000},
    }
    status, body = sandbox.request("POST", "/v1/tool-calls", call)
    assert status == 413
    assert "input.content" in body["error"]["message"]


def test_unknown_routes_and_methods(sandbox: SandboxProcess) -> None:
    assert sandbox.request("GET", "/v1/nothing")[0] == 404
    assert sandbox.request("POST", "/v1/other", {})[0] == 404
    assert sandbox.request("DELETE", "/v1/tool-calls")[0] == 405


def test_every_log_line_is_json(sandbox: SandboxProcess) -> None:
    sandbox.request("GET", "/healthz", token=None)
    sandbox.request("POST", "/v1/tool-calls", raw=b"nope")
    sandbox.stop()
    lines = sandbox.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert {"serving", "request", "shutting down", "stopped"} <= {r["msg"] for r in records}
    assert any(r.get("status") == 400 for r in records)


def test_it_refuses_to_start_without_a_token_digest(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-S", "-m", "cadre.sandbox"],
        env={
            "PYTHONPATH": str(REPO / "operator"),
            "CADRE_WORKSPACE": str(tmp_path),
            "CADRE_SANDBOX_TOKEN_SHA256_FILE": str(tmp_path / "missing"),
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "CADRE_SANDBOX_TOKEN_SHA256_FILE" in result.stderr
    assert "refuses to run without a token" in result.stderr
