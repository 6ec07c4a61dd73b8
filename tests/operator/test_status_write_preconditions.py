"""The operator's Task status writes against the local cluster: a write computed from what the
handler saw is made when only other fields moved on meanwhile (a harness asking for its
sandbox), and refused, to be looked at again, when what it overwrites changed (a harness that
started the session)."""

from __future__ import annotations

from typing import Any

import kopf
import kubernetes
import pytest
from cadre.operator.handlers import _write_unless_moved

from tests.localcluster.conftest import Served
from tests.operator.conftest import CADRE, NS, create_task

ACCEPTED = [{"type": "Accepted", "status": "True", "reason": "AgentAssigned", "message": "",
             "lastTransitionTime": "2026-12-07T00:00:00Z"}]  # fmt: skip


def _task(cluster: Served) -> dict[str, Any]:
    response = cluster.http("GET", f"{CADRE}/tasks/t")
    assert response.ok, response.text
    task: dict[str, Any] = response.json()
    return task


def _set_status(cluster: Served, status: dict[str, Any]) -> None:
    response = cluster.http("PATCH", f"{CADRE}/tasks/t/status", {"status": status},
                            content_type="application/merge-patch+json")  # fmt: skip
    assert response.ok, response.text


def test_a_write_is_made_over_other_fields_moving_and_refused_over_its_own(
    cluster: Served, apply_client: kubernetes.client.ApiClient
) -> None:
    create_task(cluster.http, "t", "Write a.txt.")
    seen = _task(cluster)
    _set_status(cluster, {"session": {"sandboxRequested": True}})  # another writer, elsewhere
    accept = {"phase": "Pending", "conditions": ACCEPTED}
    _write_unless_moved(seen["metadata"] | {"namespace": NS}, seen.get("status") or {}, accept)
    written = _task(cluster)["status"]
    assert written["phase"] == "Pending"
    assert written["conditions"] == ACCEPTED
    assert written["session"]["sandboxRequested"] is True  # kept

    seen = _task(cluster)
    _set_status(cluster, {"phase": "Running"})  # the harness took it meanwhile
    stale = {"phase": "Pending", "conditions": ACCEPTED}
    with pytest.raises(kopf.TemporaryError, match="changed meanwhile"):
        _write_unless_moved(seen["metadata"] | {"namespace": NS}, seen["status"], stale)
    assert _task(cluster)["status"]["phase"] == "Running"  # not set back
