"""The web console's speed, on the local cluster with an organization of 50 Agents in 5 Teams
and 500 Tasks (100 trees of 5) with statuses as harnesses write them:

- ``console_page_ms_p50``: the organization page's answer over HTTP (loopback, keep-alive),
  the console's watches already synced; ``console_tasks_page_ms_p50`` likewise for the Task
  trees page (all 500 Tasks).
- ``console_live_update_ms_p50``: a Task's phase written to the API server, to headless
  Chromium's page showing it (a MutationObserver notes the moment on the browser's clock,
  which is this machine's; the write is timed just before it is sent)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from cadre.cli.console.run import start_in_thread
from cadre.cli.console.server import ConsoleSettings

from bench.results import Metric
from tests.browser import chromium, missing, wait_for
from tests.console.conftest import CADRE, agent, set_status
from tests.localcluster.conftest import REPO, Http, serving

AGENTS, TEAMS, TREES, PER_TREE = 50, 5, 100, 5
PAGE_RUNS, UPDATES = 50, 20
OBSERVE = """
window.seenAt = {};
const live = document.getElementById('live');
new MutationObserver(() => {
  const row = document.getElementById(arguments[0]);
  if (row && !(row.dataset.phase in window.seenAt)) window.seenAt[row.dataset.phase] = Date.now();
}).observe(live, {childList: true, subtree: true, attributes: true});
"""


def _organization(http: Http) -> None:
    for index in range(AGENTS):
        assert http("POST", f"{CADRE}/agents", agent(f"agent-{index}")).status_code == 201
        set_status(http, "agents", f"agent-{index}", {"activeTasks": index % 3,
                                                      "memoryEntries": index})  # fmt: skip
    size = AGENTS // TEAMS
    for team in range(TEAMS):
        names = [f"agent-{team * size + i}" for i in range(size)]
        body = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Team",
                "metadata": {"name": f"team-{team}"},
                "spec": {"lead": names[0], "members": [{"agent": n} for n in names]}}  # fmt: skip
        assert http("POST", f"{CADRE}/teams", body).status_code == 201
    for tree in range(TREES):
        for depth in range(PER_TREE):
            name = f"t{tree}-{depth}"
            spec: dict[str, Any] = {"assignee": {"agent": f"agent-{(tree + depth) % AGENTS}"},
                                    "prompt": "Work."}  # fmt: skip
            if depth:
                spec["parentRef"] = {"name": f"t{tree}-{depth - 1}", "agent": "x"}
            body = {"apiVersion": "cadre.dev/v1alpha1", "kind": "Task",
                    "metadata": {"name": name}, "spec": spec}  # fmt: skip
            assert http("POST", f"{CADRE}/tasks", body).status_code == 201
            set_status(http, "tasks", name, {
                "phase": "Succeeded" if tree % 4 else "Running", "agent": spec["assignee"]["agent"],
                "startTime": "2026-12-06T10:00:00Z",
                "usage": {"turns": 4, "inputTokens": 5000, "outputTokens": 800,
                          "costUSD": "0.0300"}})  # fmt: skip


def _page_ms(url: str) -> float:
    times = []
    with requests.Session() as session:
        session.get(url, timeout=30)
        for _ in range(PAGE_RUNS):
            start = time.perf_counter()
            answer = session.get(url, timeout=30)
            times.append((time.perf_counter() - start) * 1000)
            assert answer.ok
    return statistics.median(times)


def _live_update_ms(http: Http, console_url: str, folder: Path) -> float:
    delays = []
    with chromium(folder / "profile") as browser:
        browser.get(console_url + "tasks")
        wait_for(lambda: browser.execute_script(
            "return document.getElementById('connection').innerText") == "Live")  # fmt: skip
        row = "task-default-t1-0"
        for index in range(UPDATES):
            phase = ("Running", "InReview")[index % 2]
            browser.execute_script(OBSERVE, row)
            sent = time.time() * 1000
            set_status(http, "tasks", "t1-0", {"phase": phase})
            seen = wait_for(lambda: browser.execute_script("return window.seenAt")
                            .get(phase))  # noqa: B023  # fmt: skip
            delays.append(seen - sent)
    return statistics.median(delays)


def measure() -> list[Metric]:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        with serving(folder, crd_dir=REPO / "crds") as served:
            _organization(served.http)
            console = start_in_thread(served.kubeconfig, ConsoleSettings())
            try:
                wait_for(lambda: "agent-49" in requests.get(console.url, timeout=30).text, 60)
                org_ms = _page_ms(console.url)
                tasks_ms = _page_ms(console.url + "tasks")
                why = missing()
                live_ms = None if why else _live_update_ms(served.http, console.url, folder)
            finally:
                console.stop()
    shape = f"{AGENTS} Agents in {TEAMS} Teams, {TREES * PER_TREE} Tasks"
    metrics = [
        Metric("console_page_ms_p50", round(org_ms, 2), "ms",
               f"median of {PAGE_RUNS} GETs of the organization page ({shape}), loopback HTTP",
               "<= 200"),
        Metric("console_tasks_page_ms_p50", round(tasks_ms, 2), "ms",
               f"median of {PAGE_RUNS} GETs of the Task trees page ({shape})"),
    ]  # fmt: skip
    if live_ms is not None:
        metrics.append(Metric(
            "console_live_update_ms_p50", round(live_ms, 1), "ms",
            f"median of {UPDATES} Task phase writes to the API server until headless Chromium's"
            f" page shows them ({shape}; watch, server-sent event, fragment fetch, swap)",
            "<= 1000"))  # fmt: skip
    return metrics


if __name__ == "__main__":
    for metric in measure():
        print(metric)
