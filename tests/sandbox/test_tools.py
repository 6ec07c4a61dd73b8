"""Every tool over real HTTP on loopback, as the harness will call them."""

from __future__ import annotations

import os
import time
from itertools import count

from cadre.api.agent import Tool

from tests.sandbox.conftest import SandboxProcess

ids = (f"toolu_{n:04d}" for n in count())


def test_bash_runs_in_the_workspace_and_reports_exit_code_and_streams(
    sandbox: SandboxProcess,
) -> None:
    status, result = sandbox.call(next(ids), "bash", command="pwd; echo oops >&2; exit 3")
    assert status == 200
    assert result["details"]["exit_code"] == 3
    assert result["is_error"] is True
    assert str(sandbox.workspace) in result["content"]
    assert "--- stderr ---\noops" in result["content"]


def test_bash_success_is_not_an_error(sandbox: SandboxProcess) -> None:
    _, result = sandbox.call(next(ids), "bash", command="echo hello")
    assert result["is_error"] is False
    assert result["content"] == "exit code: 0\n--- stdout ---\nhello\n"


def test_bash_timeout_kills_the_whole_process_group(sandbox: SandboxProcess) -> None:
    pidfile = sandbox.workspace / "child.pid"
    started = time.monotonic()
    _, result = sandbox.call(
        next(ids), "bash", command=f"sleep 300 & echo $! > {pidfile}; wait", timeout=1
    )
    assert time.monotonic() - started < 20
    assert result["details"]["timed_out"] is True
    assert "killed after the 1s timeout" in result["content"]
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"background child {child} survived the timeout")


def test_bash_output_is_capped_with_a_clear_marker(sandbox: SandboxProcess) -> None:
    _, result = sandbox.call(next(ids), "bash", command="head -c 100000 /dev/zero | tr '\\0' a")
    assert result["details"]["stdout_truncated"] is True
    assert "[... 70000 characters truncated ...]" in result["content"]
    assert len(result["content"]) < 31_000


def test_read_numbers_lines_and_takes_a_range(sandbox: SandboxProcess) -> None:
    (sandbox.workspace / "f.txt").write_text("".join(f"line {n}\n" for n in range(1, 11)))
    _, result = sandbox.call(next(ids), "read", path="f.txt", offset=3, limit=2)
    assert result["content"].splitlines()[:2] == ["     3\tline 3", "     4\tline 4"]
    assert "[6 more lines; use offset]" in result["content"]


def test_read_refuses_binary_files(sandbox: SandboxProcess) -> None:
    (sandbox.workspace / "blob.bin").write_bytes(b"\x00\x01\x02" * 10)
    status, result = sandbox.call(next(ids), "read", path="blob.bin")
    assert status == 422
    assert result["error"]["type"] == "binary_file"
    assert "input.path: blob.bin is a binary file" in result["error"]["message"]


def test_read_caps_large_files(sandbox: SandboxProcess) -> None:
    (sandbox.workspace / "big.txt").write_text("x" * 100 + "\n" * 1 + "y" * 300_000)
    _, result = sandbox.call(next(ids), "read", path="big.txt")
    assert result["details"]["truncated"] is True
    assert "file cut at 262144 bytes" in result["content"]


def test_write_creates_folders_and_overwrites(sandbox: SandboxProcess) -> None:
    status, result = sandbox.call(next(ids), "write", path="pkg/mod.py", content="a = 1\n")
    assert status == 200, result
    assert (sandbox.workspace / "pkg/mod.py").read_text() == "a = 1\n"
    sandbox.call(next(ids), "write", path="pkg/mod.py", content="a = 2\n")
    assert (sandbox.workspace / "pkg/mod.py").read_text() == "a = 2\n"
    assert oct((sandbox.workspace / "pkg/mod.py").stat().st_mode & 0o777) == "0o644"


def test_edit_replaces_a_unique_string(sandbox: SandboxProcess) -> None:
    (sandbox.workspace / "e.py").write_text("x = 1\ny = 2\n")
    status, result = sandbox.call(
        next(ids), "edit", path="e.py", old_string="y = 2", new_string="y = 3"
    )
    assert status == 200
    assert (sandbox.workspace / "e.py").read_text() == "x = 1\ny = 3\n"
    assert result["details"]["replacements"] == 1


def test_edit_fails_clearly_when_missing_or_not_unique(sandbox: SandboxProcess) -> None:
    (sandbox.workspace / "e.py").write_text("a\na\n")
    status, missing = sandbox.call(next(ids), "edit", path="e.py", old_string="b", new_string="c")
    assert status == 422
    assert missing["error"]["message"] == "input.old_string: not found in e.py"
    status, twice = sandbox.call(next(ids), "edit", path="e.py", old_string="a", new_string="c")
    assert status == 422
    assert "found 2 times in e.py" in twice["error"]["message"]
    assert (sandbox.workspace / "e.py").read_text() == "a\na\n", "a refused edit changes nothing"
    status, _ = sandbox.call(
        next(ids), "edit", path="e.py", old_string="a", new_string="c", replace_all=True
    )
    assert status == 200
    assert (sandbox.workspace / "e.py").read_text() == "c\nc\n"


def test_glob_lists_matches_newest_first(sandbox: SandboxProcess) -> None:
    (sandbox.workspace / "src").mkdir()
    (sandbox.workspace / "src/a.py").write_text("")
    time.sleep(0.01)
    (sandbox.workspace / "src/b.py").write_text("")
    (sandbox.workspace / "notes.txt").write_text("")
    _, result = sandbox.call(next(ids), "glob", pattern="**/*.py")
    assert result["content"].splitlines() == ["src/b.py", "src/a.py"]


def test_glob_and_grep_skip_the_sandbox_state(sandbox: SandboxProcess) -> None:
    sandbox.call(next(ids), "bash", command="echo secretish")
    _, globbed = sandbox.call(next(ids), "glob", pattern="**/*")
    assert ".cadre-sandbox" not in globbed["content"]
    _, grepped = sandbox.call(next(ids), "grep", pattern="secretish")
    assert grepped["content"] == "no matches"


def test_grep_finds_lines_and_caps_results(sandbox: SandboxProcess) -> None:
    (sandbox.workspace / "a.py").write_text("def f():\n    return 1\ndef g():\n")
    (sandbox.workspace / "b.txt").write_text("def nothing\n")
    _, result = sandbox.call(next(ids), "grep", pattern=r"^def \w+\(", glob="**/*.py")
    assert result["content"].splitlines() == ["a.py:1:def f():", "a.py:3:def g():"]
    (sandbox.workspace / "many.txt").write_text("hit\n" * 50)
    _, capped = sandbox.call(next(ids), "grep", pattern="hit", max_results=5)
    assert capped["details"]["matches"] == 50
    assert "[45 more matches not shown" in capped["content"]


def test_grep_is_case_insensitive_on_request(sandbox: SandboxProcess) -> None:
    (sandbox.workspace / "c.txt").write_text("Hello\n")
    _, result = sandbox.call(next(ids), "grep", pattern="hello", case_insensitive=True)
    assert result["content"] == "c.txt:1:Hello"


def test_tool_list_matches_what_the_harness_offers(sandbox: SandboxProcess) -> None:
    status, body = sandbox.request("GET", "/v1/tools")
    assert status == 200
    assert sorted(body["tools"]) == ["bash", "edit", "glob", "grep", "read", "write"]
    assert sorted(body["tools"]) == sorted(t.value for t in Tool)
