"""Which pods of a followed tree `cadre run` and `cadre demo` give up on (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from cadre.cli.podhealth import concerned, why_failing


def _pod(component: str, *, agent: str = "", task: str = "", **container: Any) -> dict[str, Any]:
    labels = {"app.kubernetes.io/component": component, "cadre.dev/agent": agent,
              "cadre.dev/task": task}  # fmt: skip
    return {"metadata": {"name": "p", "labels": labels},
            "status": {"containerStatuses": [{"name": "main", **container}]}}  # fmt: skip


def test_only_the_trees_harnesses_and_sandboxes_concern_it() -> None:
    assert concerned(_pod("harness", agent="lead"), {"lead"}, set())
    assert not concerned(_pod("harness", agent="other"), {"lead"}, {"t"})
    assert concerned(_pod("sandbox", task="t"), set(), {"t"})
    assert not concerned(_pod("sandbox", task="u"), {"lead"}, {"t"})


@pytest.mark.parametrize(
    ("container", "says"),
    [
        (
            {"state": {"waiting": {"reason": "ErrImagePull", "message": "unknown image x"}}},
            "ErrImagePull: unknown image x",
        ),
        (
            {
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "restartCount": 3,
                "lastState": {"terminated": {"exitCode": 1}},
            },
            "CrashLoopBackOff: container main exited 1, restarted 3 times",
        ),
        ({"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 1}, None),
        ({"state": {"waiting": {"reason": "ContainerCreating"}}}, None),
        ({"state": {"running": {}}, "restartCount": 9}, None),
    ],
)
def test_what_is_failing(container: dict[str, Any], says: str | None) -> None:
    assert why_failing(_pod("sandbox", **container)) == says
