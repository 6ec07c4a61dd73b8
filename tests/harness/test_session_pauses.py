"""Sessions that pause without ending, against the scripted model through the real SDK: waiting
on delegated work (the wait tool re-runs when woken) and a result in review (a verdict accepts
it, or reopens the conversation with feedback until the rounds run out). The harness-side tool
here is a minimal stand-in for ``TeamTools`` (whose calls go to the cluster, tested end to end
in tests/operator/test_teams_in_the_local_cluster.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
from cadre.harness.pricing import prices_for
from cadre.harness.replay import AWAITING_REVIEW, State, replay
from cadre.harness.sandbox_client import SandboxClient, StaticSandbox, ToolOutcome
from cadre.harness.session import Session, SessionConfig, Suspend, Verdict
from cadre.harness.sessionlog import SessionLog

from tests.harness.conftest import ModelFactory, unmarked


@dataclass
class WaitTool:
    ready: bool = False
    calls: int = 0

    @property
    def names(self) -> frozenset[str]:
        return frozenset({"wait_for_results"})

    async def call(self, tool_use_id: str, name: str, input: Any, state: State) -> ToolOutcome:
        self.calls += 1
        if not self.ready:
            raise Suspend
        return ToolOutcome("child-1 delivered: it works", False, reported=frozenset({"child-1#1"}))


def config(**extra: Any) -> SessionConfig:
    return SessionConfig(
        task="ns/t", agent="lead", role="Leads", prompt="Do it.", model="claude-sonnet-4-6",
        tools=(), **extra,
    )  # fmt: skip


async def run(url: str, path: Path, cfg: SessionConfig, tools: WaitTool | None = None,
              verdict: Verdict | None = None) -> tuple[dict[str, Any], Session]:  # fmt: skip
    client = anthropic.AsyncAnthropic(api_key="sk", base_url=url, max_retries=0)
    sandbox = SandboxClient(StaticSandbox("http://127.0.0.1:9", "t"), retry_for=1)
    log = SessionLog.open(path)
    session = Session(cfg, log, client, sandbox, prices_for(cfg.model), lambda _: None, tools)
    try:
        session.start()
        if verdict is not None:
            session.apply_verdict(verdict)
        return await session.run(), session
    finally:
        log.close()
        await client.close()


WAITING = {
    "agents": {
        "lead": [
            {"text": "Waiting.", "tool_uses": [{"name": "wait_for_results", "input": {}}]},
            {"choices": [{"when_last_result_contains": "it works", "text": "All done."}]},
        ]
    }
}


async def test_a_waiting_session_pauses_then_continues_when_woken(
    scripted: ModelFactory, tmp_path: Path
) -> None:
    url, model = await scripted(WAITING)
    tools = WaitTool()
    outcome, _ = await run(url, tmp_path / "s.jsonl", config(), tools)
    assert outcome["outcome"] == "Waiting"
    assert len(model.requests) == 1
    assert [d["name"] for d in model.requests[0]["tools"]] == []  # offered by the harness only

    outcome, _ = await run(url, tmp_path / "s.jsonl", config(), tools)  # woken, still no news
    assert outcome["outcome"] == "Waiting"
    assert len(model.requests) == 1

    tools.ready = True
    outcome, session = await run(url, tmp_path / "s.jsonl", config(), tools)
    assert outcome["outcome"] == "Succeeded"
    assert outcome["result"] == "All done."
    kinds = [e["type"] for e in session.log.events]
    assert "session.resumed" not in kinds  # a wake is not a crash recovery
    assert kinds.count("session.status_idle") == 2
    assert session.state.reported == {"child-1#1"}
    assert replay(session.log.events, prices_for("claude-sonnet-4-6")).reported == {"child-1#1"}


REVIEWED = {"agents": {"lead": [{"text": "Version one."}, {"text": "Version two."}]}}


async def test_a_result_in_review_reopens_with_feedback_until_the_rounds_run_out(
    scripted: ModelFactory, tmp_path: Path
) -> None:
    url, model = await scripted(REVIEWED)
    cfg = config(review_required=True, max_review_rounds=1)
    path = tmp_path / "r.jsonl"
    outcome, _ = await run(url, path, cfg)
    assert (outcome["outcome"], outcome["result"]) == ("InReview", "Version one.")

    outcome, _ = await run(url, path, cfg)  # no verdict yet: nothing happens
    assert outcome["outcome"] == "InReview"
    assert len(model.requests) == 1

    changes = Verdict("round-1", False, "Shorter, please.", "boss", 1)
    outcome, session = await run(url, path, cfg, verdict=changes)
    assert (outcome["outcome"], outcome["result"]) == ("InReview", "Version two.")
    assert unmarked(model.requests[-1]["messages"])[-1]["content"] == (
        "Changes requested by boss (round 1 of at most 1):\nShorter, please."
    )
    assert session.state.deliveries == 2
    assert not session.apply_verdict(changes)  # the same verdict again is not applied twice

    outcome, _ = await run(url, path, cfg, verdict=Verdict("round-2", False, "No.", "boss", 2))
    assert (outcome["outcome"], outcome["reason"]) == ("Failed", "ReviewRoundsExhausted")
    assert len(model.requests) == 2


async def test_an_accepted_result_ends_the_session_succeeded(
    scripted: ModelFactory, tmp_path: Path
) -> None:
    url, _ = await scripted(REVIEWED)
    cfg = config(review_required=True)
    outcome, _ = await run(url, tmp_path / "a.jsonl", cfg)
    assert outcome["reason"] == AWAITING_REVIEW
    outcome, _ = await run(
        url, tmp_path / "a.jsonl", cfg, verdict=Verdict("accepted", True, "", "boss")
    )
    assert (outcome["outcome"], outcome["reason"]) == ("Succeeded", "Accepted")
    assert outcome["result"] == "Version one."
