"""Idempotent by tool_use_id: a repeated call is answered from the store, across restarts, and
a crash mid-command leaves a clean re-run, never a half-recorded result."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any

from cadre.sandbox.store import read_journal

from tests.sandbox.conftest import SandboxProcess

COUNT = "echo run >> counter.txt; wc -l < counter.txt"


def executions(sandbox: SandboxProcess) -> list[dict[str, Any]]:
    return read_journal(sandbox.workspace / ".cadre-sandbox/executions.jsonl")


def test_the_same_id_again_returns_the_stored_result_without_running(
    sandbox: SandboxProcess,
) -> None:
    _, first = sandbox.call("toolu_once", "bash", command=COUNT)
    _, second = sandbox.call("toolu_once", "bash", command=COUNT)
    assert first["replayed"] is False
    assert second["replayed"] is True
    assert second["content"] == first["content"]
    assert (sandbox.workspace / "counter.txt").read_text() == "run\n"
    assert [e["tool_use_id"] for e in executions(sandbox)] == ["toolu_once"]


def test_the_stored_result_survives_a_sandbox_restart(sandbox: SandboxProcess) -> None:
    _, first = sandbox.call("toolu_restart", "bash", command=COUNT)
    sandbox.stop()
    sandbox.start()
    _, again = sandbox.call("toolu_restart", "bash", command=COUNT)
    assert again["replayed"] is True
    assert again["content"] == first["content"]
    assert (sandbox.workspace / "counter.txt").read_text() == "run\n"
    status, fetched = sandbox.request("GET", "/v1/tool-calls/toolu_restart")
    assert status == 200
    assert fetched["content"] == first["content"]


def test_concurrent_duplicates_run_once(sandbox: SandboxProcess) -> None:
    results: list[dict[str, Any]] = []

    def call() -> None:
        results.append(sandbox.call("toolu_dup", "bash", command=f"sleep 0.3; {COUNT}")[1])

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r["replayed"] for r in results) == [False, True, True, True]
    assert (sandbox.workspace / "counter.txt").read_text() == "run\n"


def test_an_id_reused_for_a_different_call_is_409(sandbox: SandboxProcess) -> None:
    sandbox.call("toolu_same", "bash", command="true")
    status, body = sandbox.call("toolu_same", "bash", command="rm -rf /")
    assert status == 409
    assert "already used for a different call" in body["error"]["message"]


def test_a_crash_mid_command_gives_a_clean_rerun_not_half_a_record(
    sandbox: SandboxProcess,
) -> None:
    command = "echo start >> log.txt; sleep 2; echo end >> log.txt; echo finished"
    errors: list[Exception] = []

    def call_and_lose_the_answer() -> None:
        try:
            sandbox.call("toolu_crash", "bash", command=command)
        except ConnectionError as err:  # the server died mid-call, as intended
            errors.append(err)

    caller = threading.Thread(target=call_and_lose_the_answer)
    caller.start()
    deadline = time.monotonic() + 10
    while not (sandbox.workspace / "log.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    sandbox.stop(signal.SIGKILL)
    caller.join()
    assert errors, "the caller never got an answer"
    results = sandbox.workspace / ".cadre-sandbox/results.jsonl"
    assert "toolu_crash" not in results.read_text(), "no result for an unfinished call"

    sandbox.start()
    assert sandbox.request("GET", "/v1/tool-calls/toolu_crash")[0] == 404
    status, rerun = sandbox.call("toolu_crash", "bash", command=command)
    assert status == 200
    assert rerun["rerun_after_interruption"] is True
    assert rerun["content"].startswith("[note: an earlier attempt of this call was interrupted")
    assert "finished" in rerun["content"]
    assert [e["rerun"] for e in executions(sandbox)] == [False, True]
    # Complete records only: every stored line parses.
    for line in results.read_text().splitlines():
        json.loads(line)
    _, replay = sandbox.call("toolu_crash", "bash", command=command)
    assert replay["replayed"] is True


def test_sigterm_lets_a_running_call_finish_and_store_its_result(sandbox: SandboxProcess) -> None:
    answers: list[tuple[int, dict[str, Any]]] = []
    caller = threading.Thread(
        target=lambda: answers.append(
            sandbox.call("toolu_term", "bash", command="sleep 1; echo ok")
        )
    )
    caller.start()
    journal = sandbox.workspace / ".cadre-sandbox/executions.jsonl"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
        journal.exists() and "toolu_term" in journal.read_text()
    ):
        time.sleep(0.01)  # SIGTERM only once the call is running
    assert sandbox.stop(signal.SIGTERM) == 0
    caller.join()
    assert answers[0][0] == 200
    assert "ok" in answers[0][1]["content"]
    assert "toolu_term" in (sandbox.workspace / ".cadre-sandbox/results.jsonl").read_text()


def test_a_journal_line_torn_by_a_crash_does_not_stop_the_next_start(
    sandbox: SandboxProcess,
) -> None:
    sandbox.call("toolu_before", "bash", command=COUNT)
    sandbox.stop(signal.SIGKILL)
    journal = sandbox.workspace / ".cadre-sandbox/executions.jsonl"
    with journal.open("a") as handle:
        handle.write('{"tool_use_id": "toolu_torn", "na')  # what a crash mid-append leaves
    sandbox.start()
    _, replay = sandbox.call("toolu_before", "bash", command=COUNT)
    assert replay["replayed"] is True
    status, fresh = sandbox.call("toolu_after", "bash", command=COUNT)
    assert status == 200
    assert fresh["rerun_after_interruption"] is False
    assert [e["tool_use_id"] for e in read_journal(journal)] == [
        "toolu_before",
        "toolu_after",
    ]


def test_a_result_line_torn_by_a_crash_is_a_clean_rerun_and_earlier_results_stay(
    sandbox: SandboxProcess,
) -> None:
    sandbox.call("toolu_kept", "bash", command=COUNT)
    sandbox.call("toolu_torn", "bash", command=COUNT)
    sandbox.stop(signal.SIGKILL)
    results = sandbox.workspace / ".cadre-sandbox/results.jsonl"
    whole = results.read_bytes()
    last = whole.rstrip(b"\n").rfind(b"\n") + 1
    results.write_bytes(whole[: last + 20])  # what a crash mid-append of toolu_torn leaves
    sandbox.start()
    _, kept = sandbox.call("toolu_kept", "bash", command=COUNT)
    assert kept["replayed"] is True
    status, rerun = sandbox.call("toolu_torn", "bash", command=COUNT)
    assert status == 200
    assert rerun["replayed"] is False
    assert rerun["rerun_after_interruption"] is True
    _, after = sandbox.call("toolu_torn", "bash", command=COUNT)
    assert after["replayed"] is True
    assert after["content"] == rerun["content"]


def test_a_result_stored_by_an_older_sandbox_one_file_per_result_is_still_answered(
    sandbox: SandboxProcess,
) -> None:
    """A session resumed by an upgraded sandbox on the same workspace runs nothing twice."""
    sandbox.call("toolu_old", "bash", command=COUNT)
    sandbox.stop(signal.SIGKILL)
    state = sandbox.workspace / ".cadre-sandbox"
    record = json.loads((state / "results.jsonl").read_text().splitlines()[0])
    (state / "results").mkdir()
    (state / "results/toolu_old.json").write_text(json.dumps(record))
    (state / "results.jsonl").unlink()
    sandbox.start()
    _, replay = sandbox.call("toolu_old", "bash", command=COUNT)
    assert replay["replayed"] is True
    assert (sandbox.workspace / "counter.txt").read_text() == "run\n"
