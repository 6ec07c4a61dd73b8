"""Teams end to end: the operator, three harness pods and their sandboxes in the local cluster,
driven by the scripted model. A lead delegates to an engineer, who delegates to a tester (three
levels); a forbidden edge is refused; the lead sends the engineer's first result back with
feedback and accepts the second; the waiting engineer holds no sandbox while the tester works;
what the engineer remembers shows up in its next Task's system prompt."""

from __future__ import annotations

import asyncio
import json
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from cadre.api.task import FINAL_PHASES

from tests.harness.conftest import ModelFactory, until, work_requests
from tests.localcluster.conftest import Http, Served
from tests.operator.conftest import CADRE, NS, agent_ready, create_agent, create_task, ended

SLUG_V1 = "def slugify(text):\n    return '-'.join(text.lower().split())\n"
TEST = "from slug import slugify\nassert slugify('Hello World') == 'hello-world'\nprint('ok')\n"
LESSON = "Always handle empty input in string helpers."


def tool(name: str, **input: Any) -> dict[str, Any]:
    return {"name": name, "input": input}


LEAD = [
    {"text": "Asking the tester directly.", "tool_uses": [tool("delegate", agent="tester",
                                                               instructions="Test it.")]},
    {"text": "Then the engineer.", "tool_uses": [tool(
        "delegate", agent="engineer", title="slugify",
        instructions="Write slug.py with slugify(text) and a test; make it pass.",
        acceptance_criteria="the test passes", files=["slug.py", "docs/*.md"])]},
    {"text": "Waiting.", "tool_uses": [tool("wait_for_results")]},
    {"choices": [
        {"when_last_message_contains": "delivered result #1", "text": "Needs more.",
         "tool_uses": [tool("review_result", decision="request_changes",
                            feedback="Also handle empty input.")]},
    ]},
    {"text": "Waiting again.", "tool_uses": [tool("wait_for_results")]},
    {"choices": [
        {"when_last_message_contains": "delivered result #2", "text": "Good.",
         "tool_uses": [tool("review_result", decision="accept")]},
    ]},
    {"text": "slugify is written, tested and reviewed."},
]  # fmt: skip
ENGINEER = [
    {"choices": [
        {"when_prompt_contains": "Write slug.py", "text": "Writing.", "tool_uses": [
            tool("write", path="slug.py", content=SLUG_V1),
            tool("write", path="test_slug.py", content=TEST)]},
        {"when_prompt_contains": "Second task", "text": "Noted."},
    ]},
    {"text": "Testing.", "tool_uses": [tool("bash", command="python3 test_slug.py")]},
    {"text": "Asking for an independent check.", "tool_uses": [tool(
        "delegate", agent="tester", title="check slugify",
        instructions=f"Check this code:\n{SLUG_V1}", files=["report.txt"])]},
    {"text": "Waiting for the tester.", "tool_uses": [tool("wait_for_results")]},
    {"text": "The tester agrees.", "tool_uses": [tool("review_result", decision="accept")]},
    {"text": "slug.py is written and its test passes."},
    {"choices": [
        {"when_last_message_contains": "Also handle empty input", "text": "Fixing.",
         "tool_uses": [tool("remember", text=LESSON),
                       tool("edit", path="slug.py", old_string="return '-'",
                            new_string="return '' if not text else '-'")]},
    ]},
    {"text": "Testing again.", "tool_uses": [tool(
        "bash", command="cat deliveries/*/report.txt; python3 test_slug.py")]},
    {"text": "Empty input handled; the test passes."},
]  # fmt: skip
TESTER = [
    {"text": "Checking.", "tool_uses": [tool("bash", command="echo checked > report.txt")]},
    {"text": "The code is correct.", "delay_seconds": 4},
]
ENGINEER_LESSON = "Agree on the edge cases before writing a string helper."
SCENARIO = {
    "agents": {"lead": LEAD, "engineer": ENGINEER, "tester": TESTER},
    "lessons": {"engineer": ENGINEER_LESSON},
}
TEAM = {
    "apiVersion": "cadre.dev/v1alpha1",
    "kind": "Team",
    "metadata": {"name": "platform"},
    "spec": {
        "lead": "lead",
        "members": [
            {"agent": "lead", "delegatesTo": ["engineer"]},
            {"agent": "engineer", "delegatesTo": ["tester"]},
            {"agent": "tester"},
        ],
        "review": {"maxRounds": 2},
    },
}


def tasks(http: Http) -> dict[str, dict[str, Any]]:
    items = http("GET", f"{CADRE}/tasks").json()["items"]
    return {t["metadata"]["name"]: t for t in items}


async def all_ended(http: Http) -> dict[str, dict[str, Any]]:
    """Every Task, once each has ended: an accepted child may write Succeeded (after its
    lesson) a moment after its parent, which goes on as soon as it has accepted."""
    final = FINAL_PHASES

    def ended_all() -> dict[str, dict[str, Any]] | None:
        found = tasks(http)
        return (
            found
            if all(t.get("status", {}).get("phase") in final for t in found.values())
            else None
        )

    result: dict[str, dict[str, Any]] = await until(ended_all, within=60)
    return result


async def test_a_three_level_tree_with_a_review_round_and_memory(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory, tmp_path: Path,
) -> None:  # fmt: skip
    http, kubeconfig = cluster.http, cluster.kubeconfig
    url, model = await scripted(SCENARIO)
    create_agent(http, url, "lead", tools=[])
    create_agent(http, url, "engineer")
    create_agent(http, url, "tester")
    assert http("POST", f"{CADRE}/teams", TEAM).status_code == 201
    for name in ("lead", "engineer", "tester"):
        await until(lambda name=name: agent_ready(http, name), within=60)

    def team_ready() -> bool:
        status = http("GET", f"{CADRE}/teams/platform").json().get("status") or {}
        return any(c["type"] == "Ready" and c["status"] == "True" for c in status["conditions"])

    await until(team_ready)
    create_task(http, "slugify", "Build slugify.", agent=None, team="platform")

    # Watch, while it runs, for the engineer waiting on the tester with no sandbox pod.
    released: list[str] = []

    async def observe() -> None:
        while True:
            for name, task in tasks(http).items():
                status = task.get("status") or {}
                pod = http("GET", f"/api/v1/namespaces/{NS}/pods/sbx-{name}").status_code
                waiting = status.get("agent") == "engineer" and status.get("phase") == "Waiting"
                if waiting and pod == 404 and status.get("children", {}).get("active"):
                    released.append(name)
            await asyncio.sleep(0.3)

    watcher = asyncio.create_task(observe())
    try:
        done = await until(lambda: ended(http, "slugify"), within=180)
    finally:
        watcher.cancel()
    assert done["status"]["phase"] == "Succeeded", (done["status"], json.dumps(tasks(http))[-3000:])
    assert done["status"]["result"]["summary"] == "slugify is written, tested and reviewed."

    everything = await all_ended(http)
    (engineer,) = [
        t for t in everything.values() if t["spec"]["assignee"].get("agent") == "engineer"
    ]
    (tester,) = [t for t in everything.values() if t["spec"]["assignee"].get("agent") == "tester"]
    assert engineer["spec"]["parentRef"]["name"] == "slugify"
    assert tester["spec"]["parentRef"]["name"] == engineer["metadata"]["name"]
    assert (engineer["status"]["depth"], tester["status"]["depth"]) == (1, 2)
    assert engineer["status"]["phase"] == tester["status"]["phase"] == "Succeeded"
    assert engineer["status"]["review"]["round"] == 1
    assert engineer["status"]["review"]["deliveries"] == 2
    assert engineer["status"]["review"]["decision"] == "Accepted"
    assert engineer["status"]["result"]["summary"] == "Empty input handled; the test passes."
    counts = {"total": 1, "active": 0, "succeeded": 1, "failed": 0}
    await until(lambda: tasks(http)["slugify"]["status"]["children"] | {"costUSD": 0} == counts
                | {"costUSD": 0})  # fmt: skip
    # What the tree below the root cost, as the operator adds it up level by level.
    spent = Decimal(engineer["status"]["usage"]["costUSD"]) + Decimal(
        tester["status"]["usage"]["costUSD"]
    )
    await until(lambda: Decimal(tasks(http)["slugify"]["status"]["children"]["costUSD"]) == spent)

    # The forbidden edge was refused, said to the model, recorded as an Event; nothing created.
    second_lead_request = next(
        r for r in model.requests
        if "You are lead," in json.dumps(r["system"]) and len(r["messages"]) == 3
    )  # fmt: skip
    assert "does not let lead delegate to tester" in json.dumps(second_lead_request["messages"])
    events = http("GET", f"/api/v1/namespaces/{NS}/events").json()["items"]
    refused = [e for e in events if e["reason"] == "DelegationRefused"]
    assert refused
    assert refused[0]["involvedObject"]["name"] == "slugify"
    assert refused[0]["type"] == "Warning"
    assert len(everything) == 3

    # Waiting held no compute, and the workspace survived it (the edit found slug.py).
    assert engineer["metadata"]["name"] in released
    fix = [
        r for r in work_requests(model.requests) if "Testing again." in json.dumps(r["messages"])
    ]
    assert "ok" in json.dumps(fix[-1]["messages"][-1])

    # Deliverables: the tester's report went into the engineer's workspace (read back by the
    # engineer's own bash); the lead, with no sandbox tools, got slug.py inline; what matched
    # nothing is named. The engineer's status holds its second delivery's files.
    assert "checked" in json.dumps(fix[-1]["messages"][-1])
    report = f"deliveries/{tester['metadata']['name']}/report.txt"
    told = json.dumps([r["messages"] for r in model.requests if "You are engineer," in
                       json.dumps(r["system"])])  # fmt: skip
    assert f"now in your workspace under deliveries/{tester['metadata']['name']}/" in told
    assert f"- {report} (8 bytes)" in told
    lead_told = json.dumps([r["messages"] for r in model.requests if "You are lead," in
                            json.dumps(r["system"])])  # fmt: skip
    assert json.dumps(f"--- slug.py ---\n{SLUG_V1}")[1:-1] in lead_told
    assert "docs/*.md: no file matches" in lead_told
    result = engineer["status"]["result"]
    assert [f["path"] for f in result["files"]] == ["slug.py"]
    assert "return '' if not text" in result["files"][0]["content"]
    assert result["filesOmitted"] == ["docs/*.md: no file matches"]

    # kubectl shows the tree.
    listing = await asyncio.to_thread(
        subprocess.run,
        ["kubectl", f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp_path / 'kc'}", "get",
         "tasks", "-n", NS], capture_output=True, text=True, check=True,
    )  # fmt: skip
    shown = listing.stdout
    rows = [line.split() for line in shown.splitlines()[1:]]
    assert {row[0] for row in rows} == set(everything)
    assert any(row[3] == "slugify" for row in rows)  # the Parent column

    # Memory: recorded in the ConfigMap, and in the system prompt of the engineer's next Task.
    memory = http("GET", f"/api/v1/namespaces/{NS}/configmaps/memory-engineer").json()
    entries = yaml.safe_load(memory["data"]["entries.yaml"])
    assert LESSON in [e["text"] for e in entries]
    assert ENGINEER_LESSON in [e["text"] for e in entries]  # written by the model at the end
    create_task(http, "second", "Second task: note it.")
    second = await until(lambda: ended(http, "second"), within=60)
    assert second["status"]["phase"] == "Succeeded"
    request = next(r for r in model.requests if "Second task" in json.dumps(r["messages"]))
    assert LESSON in json.dumps(request["system"])
    assert ENGINEER_LESSON in json.dumps(request["system"])


RULES_LEAD = [
    {"text": "A first.", "tool_uses": [tool("delegate", agent="a", instructions="Do A.")]},
    {"text": "B too.", "tool_uses": [tool("delegate", agent="b", instructions="Do B.")]},
    {"text": "Waiting.", "tool_uses": [tool("wait_for_results")]},
    {"text": "More.", "tool_uses": [tool("review_result", decision="request_changes",
                                         feedback="More detail.")]},
    {"text": "Waiting.", "tool_uses": [tool("wait_for_results")]},
    {"text": "Still not.", "tool_uses": [tool("review_result", decision="request_changes",
                                              feedback="Still more detail.")]},
    {"text": "Waiting.", "tool_uses": [tool("wait_for_results")]},
    {"choices": [{"when_last_message_contains": "ReviewRoundsExhausted",
                  "text": "A failed its review."}]},
]  # fmt: skip
RULES_A = [
    {"text": "Back to the lead.", "tool_uses": [tool("delegate", agent="lead", instructions="x")]},
    {"text": "Then b.", "tool_uses": [tool("delegate", agent="b", instructions="y")]},
    {"text": "A, first version.", "delay_seconds": 3},
    {"text": "A, second version."},
]
RULES_TEAM = {
    "apiVersion": "cadre.dev/v1alpha1",
    "kind": "Team",
    "metadata": {"name": "rules"},
    "spec": {
        "lead": "lead",
        "members": [
            {"agent": "lead", "delegatesTo": ["a", "b"]},
            {"agent": "a", "delegatesTo": ["lead", "b"]},
            {"agent": "b"},
        ],
        "delegation": {"maxDepth": 1, "maxChildrenPerTask": 1},
        "review": {"maxRounds": 1},
    },
}


async def test_the_teams_rules_hold_and_review_rounds_run_out(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory,
) -> None:  # fmt: skip
    """A cycle, over-depth and over-fan-out are refused with messages that say which rule; a
    child sent back more than maxRounds times ends Failed; the lead's harness restarted while
    it waits loses nothing."""
    http = cluster.http
    url, model = await scripted({"agents": {"lead": RULES_LEAD, "a": RULES_A}})
    for name in ("lead", "a", "b"):
        create_agent(http, url, name, tools=[])
    assert http("POST", f"{CADRE}/teams", RULES_TEAM).status_code == 201
    for name in ("lead", "a", "b"):
        await until(lambda name=name: agent_ready(http, name), within=60)
    create_task(http, "rules", "Rules.", agent=None, team="rules")

    await until(lambda: tasks(http)["rules"].get("status", {}).get("phase") == "Waiting")
    pod = f"/api/v1/namespaces/{NS}/pods/harness-lead-0"
    first = http("GET", pod).json()["metadata"]["uid"]
    http("DELETE", pod, {"gracePeriodSeconds": 0})

    done = await until(lambda: ended(http, "rules"), within=120)
    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert done["status"]["result"]["summary"] == "A failed its review."
    everything = tasks(http)
    assert len(everything) == 2  # the refused requests created nothing
    (child,) = [t for t in everything.values() if t["metadata"]["name"] != "rules"]
    assert child["status"]["phase"] == "Failed"
    succeeded = next(c for c in child["status"]["conditions"] if c["type"] == "Succeeded")
    assert succeeded["reason"] == "ReviewRoundsExhausted"

    said = json.dumps(model.requests)
    assert "delegating to lead would form a cycle: lead -> a -> lead" in said
    assert 'a child of this Task would be at depth 2; team \\"rules\\" allows maxDepth 1' in said
    assert "allows maxChildrenPerTask 1" in said
    events = http("GET", f"/api/v1/namespaces/{NS}/events").json()["items"]
    assert len([e for e in events if e["reason"] == "DelegationRefused"]) == 3
    assert http("GET", pod).json()["metadata"]["uid"] != first  # a new harness finished it


REVIEWED_LEAD = [
    {"text": "Delegating.", "tool_uses": [tool(
        "delegate", agent="engineer", title="slugify", files=["slug.py"],
        instructions="Write slug.py with slugify(text).")]},
    {"text": "Waiting.", "tool_uses": [tool("wait_for_results")]},
    {"choices": [
        {"when_last_message_contains": "delivered result #2, not reviewed: reviewer qa gave no",
         "text": "Accepting.", "tool_uses": [tool("review_result", decision="accept")]},
    ]},
    {"text": "slugify is done."},
]  # fmt: skip
REVIEWED_ENGINEER = [
    {"text": "Writing.", "tool_uses": [tool("write", path="slug.py", content=SLUG_V1)]},
    {"text": "slug.py, first version."},
    {"choices": [
        {"when_last_message_contains": "Handle empty input", "text": "Fixing.",
         "tool_uses": [tool("edit", path="slug.py", old_string="return '-'",
                            new_string="return '' if not text else '-'")]},
    ]},
    {"text": "slug.py, second version."},
]  # fmt: skip
QA = [
    {"choices": [
        {"when_prompt_contains": "delivery #1", "text": "Empty input is not handled.",
         "tool_uses": [tool("review_result", decision="request_changes",
                            feedback="Handle empty input.")]},
        {"when_prompt_contains": "delivery #2", "text": "Looks fine to me."},  # no verdict
    ]},
    {"text": "Sent back."},
]  # fmt: skip
REVIEWED_TEAM = {
    "apiVersion": "cadre.dev/v1alpha1",
    "kind": "Team",
    "metadata": {"name": "reviewed"},
    "spec": {
        "lead": "lead",
        "members": [
            {"agent": "lead", "delegatesTo": ["engineer"]},
            {"agent": "engineer"},
            {"agent": "qa"},
        ],
        "review": {"reviewer": "qa"},
    },
}


async def test_the_teams_reviewer_sees_each_delivery_before_the_requester(
    cluster: Served, operator: asyncio.subprocess.Process,
    scripted: ModelFactory,
) -> None:  # fmt: skip
    """Delivery #1 goes to the reviewer, who sends it back: the lead never sees it. The
    reviewer gives no verdict on delivery #2, which then reaches the lead unscreened, saying so
    (and a Warning Event), and the lead accepts it."""
    http = cluster.http
    scenario = {"agents": {"lead": REVIEWED_LEAD, "engineer": REVIEWED_ENGINEER, "qa": QA}}
    url, model = await scripted(scenario)
    create_agent(http, url, "lead", tools=[])
    create_agent(http, url, "engineer")
    create_agent(http, url, "qa", tools=[])
    assert http("POST", f"{CADRE}/teams", REVIEWED_TEAM).status_code == 201
    for name in ("lead", "engineer", "qa"):
        await until(lambda name=name: agent_ready(http, name), within=60)
    create_task(http, "reviewed", "Build slugify.", agent=None, team="reviewed")
    done = await until(lambda: ended(http, "reviewed"), within=120)
    assert done["status"]["phase"] == "Succeeded", (done["status"], json.dumps(tasks(http))[-3000:])

    everything = await all_ended(http)
    (work,) = [t for t in everything.values() if t["spec"].get("parentRef")]
    name = work["metadata"]["name"]
    assert work["spec"]["review"]["reviewer"] == "qa"
    assert work["status"]["phase"] == "Succeeded"
    review = work["status"]["review"]
    assert (review["deliveries"], review["round"], review["screened"]) == (2, 1, 2)
    assert review.get("passed", 0) == 0
    assert (review["decision"], review["reviewer"]) == ("Accepted", "lead")

    reviews = sorted(
        (t for t in everything.values() if t["spec"].get("reviewOf")),
        key=lambda t: t["spec"]["reviewOf"]["delivery"],
    )
    assert [r["spec"]["reviewOf"] for r in reviews] == [
        {"task": name, "delivery": 1}, {"task": name, "delivery": 2},
    ]  # fmt: skip
    assert {r["spec"]["assignee"]["agent"] for r in reviews} == {"qa"}
    assert {r["metadata"]["ownerReferences"][0]["uid"] for r in reviews} == {
        work["metadata"]["uid"]
    }
    await until(lambda: all(ended(http, r["metadata"]["name"]) for r in reviews))

    said = {
        agent: json.dumps([r["messages"] for r in model.requests
                           if f"You are {agent}," in json.dumps(r["system"])])
        for agent in ("lead", "qa")
    }  # fmt: skip
    assert "delivered result #1" not in said["lead"]  # the reviewer sent it back first
    assert "delivered result #2" in said["lead"]
    assert json.dumps(f"--- slug.py ---\n{SLUG_V1}")[1:-1] in said["qa"]
    events = http("GET", f"/api/v1/namespaces/{NS}/events").json()["items"]
    about = [e for e in events if e["involvedObject"]["name"] == name]
    assert len([e for e in about if e["reason"] == "ReviewRequested"]) == 2
    (warning,) = [e for e in about if e["reason"] == "ReviewerGaveNoVerdict"]
    assert warning["type"] == "Warning"
