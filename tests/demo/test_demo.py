"""``cadre demo`` (what ``make demo`` runs) as a newcomer runs it: a real ``cadre dev up`` with
its operator, harness and sandbox pods, the scripted model, and the example Team. It must end
Succeeded with the real files the engineer wrote, exit 0, and leave no process behind; a run
whose Task fails exits 1 and cleans up just the same."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.localcluster.conftest import REPO
from tests.localcluster.node.conftest import alive, descendants

SCENARIO = REPO / "examples" / "demo" / "scripted" / "scenario.yaml"


def run_demo(
    tmp_path: Path, scenario: Path, *extra: str, term_when: str | None = None
) -> tuple[int, str, set[int]]:
    """Run the demo; its exit code, output, and every process it had below it while it ran
    (with ``term_when``, SIGTERM is sent once the output says that)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "KUBECONFIG")}
    output = tmp_path / "demo.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cadre.cli.main", "demo", "--state-dir", str(tmp_path / "s"),
             "--scenario", str(scenario), "--timeout", "240", *extra],
            stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env,
        )  # fmt: skip
        seen: set[int] = set()
        while proc.poll() is None:
            seen |= descendants(proc.pid)
            if term_when is not None and term_when in output.read_text(errors="replace"):
                proc.send_signal(signal.SIGTERM)
                term_when = None
            time.sleep(0.2)
    return proc.returncode, output.read_text(), seen


def test_the_demo_succeeds_with_real_work_and_leaves_nothing_running(tmp_path: Path) -> None:
    code, out, seen = run_demo(tmp_path, SCENARIO)
    assert code == 0, out[-4000:]
    assert "Task slugify Succeeded." in out
    # The tree: lead -> engineer -> reviewer, all Succeeded; the engineer delivered twice.
    tree = out.split("The delegation tree\n", 1)[1].split("\n\n", 1)[0].splitlines()
    rows = [line.split() for line in tree[1:-1]]
    assert tree[-1].split()[0] == "TOTAL"  # the whole tree's turns, tokens and cost
    assert [(r[-7], r[-6]) for r in rows] == [
        ("lead", "Succeeded"), ("engineer", "Succeeded"), ("reviewer", "Succeeded"),
    ]  # fmt: skip
    assert rows[1][-1] == "2"
    assert tree[2].lstrip().startswith("└─ slugify-")
    assert tree[3].lstrip().startswith("└─ ")
    # The story happened: the reviewer's finding, the lead's requested change, acceptance.
    highlights = out.split("\nHighlights\n", 1)[1].split("\nThe deliverable\n", 1)[0]
    assert "'hello,-world!'" in out  # the reviewer's real run of the first version
    assert "review_result {'decision': 'request_changes'" in highlights
    assert "review_result {'decision': 'accept'}" in highlights
    # The deliverable: the files the engineer's sandbox wrote, and the tests ran there.
    deliverable = out.split("\nThe deliverable\n", 1)[1]
    assert "--- slug.py" in deliverable
    assert "unicodedata.normalize" in deliverable
    assert "def test_accents_are_transliterated" in deliverable
    assert "Ran 4 tests" in out or "test_accents_are_transliterated" in out
    # Every process the demo started (model, cluster, operator, harnesses, sandboxes) is gone.
    assert len(seen) >= 5, seen
    assert not [pid for pid in seen if alive(pid)]


def test_a_failed_task_exits_1_and_still_stops_everything(tmp_path: Path) -> None:
    broken = tmp_path / "scenario.yaml"
    broken.write_text("agents:\n  lead: []\n")  # the lead's first model call gets an error
    code, out, seen = run_demo(tmp_path, broken)
    assert code == 1, out[-3000:]
    assert "Task slugify Failed." in out
    assert "ModelError" in out
    assert not [pid for pid in seen if alive(pid)]


def test_a_broken_example_is_named_and_nothing_starts(tmp_path: Path) -> None:
    example = tmp_path / "example"
    shutil.copytree(REPO / "examples" / "demo", example)
    (example / "team.yaml").write_text("apiVersion: cadre.dev/v1alpha1\nmetadata: {name: x}\n")
    code, out, seen = run_demo(tmp_path, SCENARIO, "--example", str(example))
    assert code == 1
    assert f"{example / 'team.yaml'}: document 1 has no kind" in out
    assert not seen


def test_sigterm_stops_everything_the_demo_started(tmp_path: Path) -> None:
    """CI and `timeout` stop with SIGTERM, not Ctrl-C: the demo unwinds just the same."""
    code, out, seen = run_demo(tmp_path, SCENARIO, term_when="applied ")
    assert code == 128 + signal.SIGTERM, out[-3000:]
    assert "stopping the local cluster and the model" in out
    assert len(seen) >= 3, seen  # the model, the cluster and its operator at least
    assert not [pid for pid in seen if alive(pid)]
