"""The console end to end with real agents: the operator, a harness pod and its sandbox in the
local cluster, the scripted model. A browser follows a session's transcript (replayed, then
live) while the session waits on a tool call a Policy asks a person about; the call is approved
with the console's button in another tab, and the transcript goes on to the end, every event
once and in order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cadre.cli.console.run import start_in_thread
from cadre.cli.console.server import ConsoleSettings
from selenium import webdriver

from tests.browser import screenshot
from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Served
from tests.operator.conftest import CADRE, create_agent, create_task, ended

SCENARIO = {"agents": {"engineer": [
    {"text": "Writing it.", "tool_uses": [
        {"name": "write", "input": {"path": "a.txt", "content": "a\n"}}]},
    {"text": "Checking it.", "tool_uses": [{"name": "bash", "input": {"command": "cat a.txt"}}]},
    {"text": "Done: a.txt holds a."},
]}}  # fmt: skip
CLICK_APPROVE = """const b = document.querySelector('button[id^=approve-default-live-]');
if (b) { b.click(); return true; } return false;"""
SEQS = "return Array.from(document.querySelectorAll('#transcript li')).map(li => li.dataset.seq)"
# Asked as scripts that tolerate a page still being drawn (the console may not have read the
# cluster yet when the page is first asked for; it then redraws itself).
TEXT = "return (document.getElementById('transcript') || {}).innerText || ''"
STATE = "return (document.getElementById('transcript-state') || {}).innerText || ''"


async def _in_browser(step: Callable[[], Any]) -> Any:
    # Selenium blocks; the scripted model answers on this test's event loop.
    return await asyncio.to_thread(step)


async def test_a_transcript_is_replayed_then_followed_across_an_approval(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory,
    browser: webdriver.Chrome,
) -> None:  # fmt: skip
    http = cluster.http
    url, _ = await scripted(SCENARIO)
    ask = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Policy", "metadata": {"name": "ask"},
           "spec": {"toolRules": [{"tools": ["bash"], "decision": "Ask"}]}}  # fmt: skip
    assert http("POST", f"{CADRE}/policies", ask).ok
    create_agent(http, url)
    create_task(http, "live", "Write a.txt.")
    await until(lambda: (http("GET", f"{CADRE}/tasks/live").json().get("status") or {})
                .get("pendingToolCalls"), within=90)  # fmt: skip

    console = await asyncio.to_thread(start_in_thread, cluster.kubeconfig,
                                      ConsoleSettings())  # fmt: skip
    try:
        await _in_browser(lambda: browser.get(console.url + "tasks/default/live"))
        await until(lambda: "Writing it." in browser.execute_script(TEXT)
                    and "Following" in browser.execute_script(STATE))  # fmt: skip
        await _in_browser(lambda: screenshot(browser, "transcript"))
        first = browser.current_window_handle

        def approve() -> None:
            browser.switch_to.new_window("tab")
            browser.get(console.url + "waiting")

        await _in_browser(approve)
        # Found and clicked in one script: live updates replace the list (a found element
        # would go stale between finding and clicking).
        await until(lambda: browser.execute_script(CLICK_APPROVE))
        await until(lambda: "Approved tool call" in browser.page_source)
        await _in_browser(lambda: browser.switch_to.window(first))

        done = await until(lambda: ended(http, "live"), within=90)
        assert done["status"]["phase"] == "Succeeded"
        await until(lambda: "The session is over" in browser.execute_script(STATE), within=30)
        text = browser.execute_script(TEXT)
        assert "Done: a.txt holds a." in text
        assert "cat a.txt" in text
        seqs = [int(s) for s in browser.execute_script(SEQS)]
        assert seqs == sorted(set(seqs)), "every event once, in order"
    finally:
        await asyncio.to_thread(console.stop)
