"""``POST /v1/bundle``: the files a delegated Task hands back, over real HTTP. Text only,
bounded, each file once, never outside the workspace; whatever is left out is named."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.sandbox.conftest import SandboxProcess


def bundle(sandbox: SandboxProcess, patterns: Any, max_bytes: Any = 65536) -> tuple[int, Any]:
    return sandbox.request("POST", "/v1/bundle", {"patterns": patterns, "max_bytes": max_bytes})


def test_matching_text_files_come_back_with_their_content_once_each(
    sandbox: SandboxProcess,
) -> None:
    (sandbox.workspace / "src/pkg").mkdir(parents=True)
    (sandbox.workspace / "src/pkg/a.py").write_text("A = 1\n")
    (sandbox.workspace / "src/b.py").write_text("B = 'é'\n")
    (sandbox.workspace / "README.md").write_text("# readme\n")
    status, body = bundle(sandbox, ["README.md", "src/**/*.py", "src/b.py"])
    assert status == 200
    assert body["files"] == [
        {"path": "README.md", "sizeBytes": 9, "content": "# readme\n"},
        {"path": "src/b.py", "sizeBytes": 9, "content": "B = 'é'\n"},
        {"path": "src/pkg/a.py", "sizeBytes": 6, "content": "A = 1\n"},
    ]
    assert body["omitted"] == []


def test_what_is_left_out_is_named_with_the_reason(sandbox: SandboxProcess) -> None:
    (sandbox.workspace / "image.png").write_bytes(b"\x89PNG\x00\x00binary")
    (sandbox.workspace / "latin1.txt").write_bytes("café".encode("latin-1"))
    (sandbox.workspace / "big.txt").write_text("x" * 100)
    (sandbox.workspace / "small.txt").write_text("y" * 10)
    os.symlink("/etc/hostname", sandbox.workspace / "escape.txt")
    sandbox.call("toolu_state", "bash", command="true")  # the sandbox's own records exist
    patterns = ["image.png", "latin1.txt", "big.txt", "small.txt", "escape.txt", "docs/*.md",
                ".cadre-sandbox/*"]  # fmt: skip
    status, body = bundle(sandbox, patterns, max_bytes=50)
    assert status == 200
    assert [f["path"] for f in body["files"]] == ["small.txt"]
    assert body["omitted"] == [
        "image.png: binary; only text files are handed over",
        "latin1.txt: not UTF-8 text; only text files are handed over",
        "big.txt: 100 bytes, more than the 50 left in the delivery",
        "escape.txt: a link to outside the workspace",
        "docs/*.md: no file matches",
        ".cadre-sandbox/*: no file matches",
    ]


@pytest.mark.parametrize(
    ("patterns", "max_bytes", "message"),
    [
        (None, 10, "patterns: a list of 1 to 16 glob patterns"),
        ([], 10, "patterns: a list of 1 to 16 glob patterns"),
        (["a"] * 17, 10, "patterns: a list of 1 to 16 glob patterns"),
        ([""], 10, "patterns[0]: must be a non-empty string"),
        (["ok", 3], 10, "patterns[1]: must be a non-empty string"),
        (["/etc/passwd"], 10, "patterns[0]: must be relative to the workspace, without '..'"),
        (["src/../../x"], 10, "patterns[0]: must be relative to the workspace, without '..'"),
        (["a"], 0, "max_bytes: an integer from 1 to 1048576"),
        (["a"], "10", "max_bytes: an integer from 1 to 1048576"),
        (["a"], True, "max_bytes: an integer from 1 to 1048576"),
    ],
)
def test_a_bad_request_is_400_naming_the_field(
    sandbox: SandboxProcess, patterns: Any, max_bytes: Any, message: str
) -> None:
    status, body = bundle(sandbox, patterns, max_bytes)
    assert status == 400
    assert body["error"]["message"] == message


def test_a_bundle_without_the_session_token_is_401(sandbox: SandboxProcess) -> None:
    (sandbox.workspace / "secret.txt").write_text("s")
    status, body = sandbox.request(
        "POST", "/v1/bundle", {"patterns": ["*"], "max_bytes": 10}, token="wrong"
    )
    assert status == 401
    assert "secret" not in str(body)
