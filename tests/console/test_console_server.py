"""The console against the local cluster over real sockets: pages rendered from what its
watches read, live change events, the guards a local server acting with the user's credentials
needs (Host, Origin, token), and Approve / Reject writing what ``cadre approve`` writes."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import requests

from tests.console.conftest import CADRE, Org, set_status
from tests.localcluster.node.conftest import eventually


def page(org: Org, path: str, **options: Any) -> requests.Response:
    return requests.get(org.console.url.rstrip("/") + path, timeout=10, **options)


def synced(org: Org, path: str, needle: str) -> str:
    return str(
        eventually(lambda: (r := page(org, path)).ok and needle in r.text and r.text, timeout=30)
    )


def test_the_organization_page_shows_teams_agents_and_spend(org: Org) -> None:
    html = synced(org, "/", "Team platform")
    assert 'aria-current="page"' in html
    assert re.search(r"<strong>lead</strong>.*lead.*Ready", html, re.S)
    assert "Not ready: SecretNotModelKey" in html  # the reviewer
    assert "Agents in no Team" in html
    assert "analyst" in html
    assert "$0.0570" in html  # spend today: 0.0150 + 0.0420, both counted today
    assert "2 memories" in html


def test_task_trees_roll_up_cost_and_tokens(org: Org) -> None:
    html = synced(org, "/tasks", "ship-it")
    tree = html[html.index("ship-it") :]
    assert tree.index(">ship-it<") < tree.index(">build<")
    assert "InReview" in tree
    assert "Running" in tree
    assert "$0.0570" in tree  # the tree's total row
    assert "4,900" in tree  # tokens: 1,200 + 3,700


def test_a_change_is_announced_and_the_fragment_shows_it(org: Org) -> None:
    synced(org, "/tasks", "build")
    first = page(org, "/tasks?fragment=1")
    assert "<html" not in first.text  # only the live part
    version = first.headers["X-Console-Version"]
    with page(org, f"/changes?version={version}", stream=True) as stream:
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        done = {"phase": "Succeeded", "completionTime": "2026-12-06T10:05:00Z"}
        set_status(org.http, "tasks", "build", done)
        lines = stream.iter_lines(decode_unicode=True)
        assert next(line for line in lines if line.startswith("event:")) == "event: change"
    after = synced(org, "/tasks?fragment=1", 'data-phase="Succeeded"')
    assert 'id="task-default-build" data-phase="Succeeded"' in after


def test_pages_answer_only_their_own_host(org: Org) -> None:
    synced(org, "/", "Team platform")
    port = urlsplit(org.console.url).port
    assert page(org, "/", headers={"Host": f"localhost:{port}"}).ok
    rebound = page(org, "/", headers={"Host": f"attacker.example:{port}"})
    assert rebound.status_code == 421
    assert "Team platform" not in rebound.text
    assert "frame-ancestors 'none'" in rebound.headers["Content-Security-Policy"]
    shown = page(org, "/")
    assert "script-src 'self'" in shown.headers["Content-Security-Policy"]
    assert shown.headers["X-Content-Type-Options"] == "nosniff"


def _form(org: Org) -> tuple[str, dict[str, str]]:
    html = synced(org, "/waiting", "toolu_01")
    token = re.search(r'name="csrf" value="([^"]+)"', html)
    assert token is not None
    return html, {"csrf": token.group(1), "namespace": "default"}


def test_approving_a_deliverable_writes_the_verdict_cadre_approve_writes(org: Org) -> None:
    html, form = _form(org)
    assert "Deliverable of" in html
    assert "slugify is ready" in html
    answer = requests.post(org.console.url + "decide", data={
        **form, "task": "ship-it", "call": "", "decision": "approve", "feedback": "Well done"},
        timeout=10, allow_redirects=False)  # fmt: skip
    assert answer.status_code == 303, answer.text
    assert "Approved Task ship-it." in page(org, answer.headers["Location"]).text
    spec = org.http("GET", f"{CADRE}/tasks/ship-it").json()["spec"]
    assert spec["approval"] == {"decision": "Approved", "feedback": "Well done"}


def test_rejecting_a_tool_call_answers_that_call(org: Org) -> None:
    html, form = _form(org)
    assert "pip install slugify-extra" in html
    assert "ask-installs" in html
    answer = requests.post(org.console.url + "decide", data={
        **form, "task": "build", "call": "toolu_01", "decision": "reject",
        "feedback": "No new packages"}, timeout=10, allow_redirects=False)  # fmt: skip
    assert answer.status_code == 303
    assert (
        "Rejected tool call toolu_01 of Task build." in page(org, answer.headers["Location"]).text
    )
    spec = org.http("GET", f"{CADRE}/tasks/build").json()["spec"]
    assert spec["toolApprovals"]["toolu_01"] == {
        "decision": "Rejected",
        "reason": "No new packages",
    }
    # Answered: it leaves the list (the watch delivers the change), and a second answer is refused.
    synced(org, "/waiting", "slugify is ready")
    eventually(lambda: "toolu_01" not in page(org, "/waiting").text, timeout=30)
    again = requests.post(org.console.url + "decide", data={
        **form, "task": "build", "call": "toolu_01", "decision": "approve"},
        timeout=10)  # fmt: skip
    assert "tool call toolu_01 of Task build is already answered" in again.text


def test_a_decision_without_the_token_or_from_another_site_is_refused(org: Org) -> None:
    _, form = _form(org)
    fields = {**form, "task": "ship-it", "decision": "approve"}
    forged = requests.post(org.console.url + "decide", data={**fields, "csrf": "guess"},
                           timeout=10)  # fmt: skip
    assert forged.status_code == 403
    cross = requests.post(org.console.url + "decide", data=fields, timeout=10,
                          headers={"Origin": "https://attacker.example"})  # fmt: skip
    assert cross.status_code == 403
    assert "approval" not in org.http("GET", f"{CADRE}/tasks/ship-it").json()["spec"]
    # Its own host under https (a TLS-terminating Ingress in front) is its own origin.
    own = f"https://{urlsplit(org.console.url).netloc}"
    behind = requests.post(org.console.url + "decide", data=fields, timeout=10,
                           headers={"Origin": own}, allow_redirects=False)  # fmt: skip
    assert behind.status_code == 303


def test_an_agent_page_shows_its_memory_and_tasks(org: Org) -> None:
    memory = {"metadata": {"name": "memory-lead"}, "data": {"entries.yaml": (
        "- text: Run the tests before delivering.\n  created: '2026-12-01T10:00:00Z'\n"
        "  uses: 4\n  task: ship-0\n")}}  # fmt: skip
    assert org.http("POST", "/api/v1/namespaces/default/configmaps", memory).status_code == 201
    html = synced(org, "/agents/default/lead", "ship-it")
    assert "Run the tests before delivering." in html
    assert "<td>4</td>" in html
    missing = page(org, "/agents/default/nobody")
    assert "No Agent nobody in namespace default." in missing.text


def test_spend_by_agent_team_and_namespace(org: Org) -> None:
    html = synced(org, "/spend", "default/engineer")
    assert "By Agent" in html
    assert "By Team" in html
    assert "By namespace" in html
    team = html[html.index("By Team") : html.index("By namespace")]
    assert "default/platform" in team
    assert "$0.0570" in team
    assert page(org, "/spend?days=x").status_code == 400
