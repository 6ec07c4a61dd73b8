"""Watches as informers and kopf use them: events after a resourceVersion, resumption without
gaps or duplicates, 410 Gone when too old, bookmarks, and selector transitions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cadre.localcluster.runner import ThreadedApiServer, threaded_apiserver

from tests.localcluster.conftest import REPO, Http, task_manifest


def _stream(http: Http, path: str) -> Iterator[dict[str, Any]]:
    with http("GET", path, headers={"Accept": "application/json"}, stream=True) as response:
        assert response.status_code == 200, response.text
        for line in response.iter_lines():
            if line:
                yield json.loads(line)


def _tasks(namespace: str) -> str:
    return f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks"


def _collect(http: Http, path: str, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    stream = _stream(http, path)
    for event in stream:
        events.append(event)
        if len(events) == count:
            break
    stream.close()
    return events


def test_watch_from_a_list_sees_later_changes_in_order(http: Http, namespace: str) -> None:
    base = _tasks(namespace)
    http("POST", base, task_manifest("before"))
    listed = http("GET", base).json()
    rv = listed["metadata"]["resourceVersion"]
    http("POST", base, task_manifest("after"))
    http("PATCH", base + "/after", {"spec": {"title": "t"}}, "application/merge-patch+json")
    http("DELETE", base + "/before")
    events = _collect(http, f"{base}?watch=true&resourceVersion={rv}&timeoutSeconds=5", 3)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "after"),
        ("MODIFIED", "after"),
        ("DELETED", "before"),
    ]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions)


def test_resuming_from_the_last_seen_version_loses_and_repeats_nothing(
    http: Http, namespace: str
) -> None:
    base = _tasks(namespace)
    start = http("GET", base).json()["metadata"]["resourceVersion"]
    for index in range(6):
        http("POST", base, task_manifest(f"r{index}"))
    first = _collect(http, f"{base}?watch=true&resourceVersion={start}&timeoutSeconds=5", 3)
    last = first[-1]["object"]["metadata"]["resourceVersion"]
    rest = _collect(http, f"{base}?watch=true&resourceVersion={last}&timeoutSeconds=5", 3)
    names = [e["object"]["metadata"]["name"] for e in first + rest]
    assert names == [f"r{i}" for i in range(6)]


def test_a_watch_without_version_starts_with_the_current_objects(
    http: Http, namespace: str
) -> None:
    base = _tasks(namespace)
    http("POST", base, task_manifest("present"))
    events = _collect(http, f"{base}?watch=true&timeoutSeconds=5", 1)
    assert events[0]["type"] == "ADDED"
    assert events[0]["object"]["metadata"]["name"] == "present"


def test_bookmarks_when_asked(http: Http, namespace: str) -> None:
    base = _tasks(namespace)
    rv = http("GET", base).json()["metadata"]["resourceVersion"]
    events = _collect(
        http, f"{base}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=5", 1
    )
    assert events[0]["type"] == "BOOKMARK"
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_no_bookmarks_unless_asked(http: Http, namespace: str) -> None:
    base = _tasks(namespace)
    rv = http("GET", base).json()["metadata"]["resourceVersion"]
    events = list(_stream(http, f"{base}?watch=true&resourceVersion={rv}&timeoutSeconds=1"))
    assert events == []


def test_label_selector_transitions_become_added_and_deleted(http: Http, namespace: str) -> None:
    base = _tasks(namespace)
    rv = http("GET", base).json()["metadata"]["resourceVersion"]
    http("POST", base, task_manifest("moving"))
    http(
        "PATCH",
        base + "/moving",
        {"metadata": {"labels": {"team": "a"}}},
        "application/merge-patch+json",
    )
    http(
        "PATCH",
        base + "/moving",
        {"metadata": {"labels": {"team": "b"}}},
        "application/merge-patch+json",
    )
    events = _collect(
        http, f"{base}?watch=true&resourceVersion={rv}&labelSelector=team%3Da&timeoutSeconds=5", 2
    )
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]
    assert events[1]["object"]["metadata"]["labels"] == {"team": "b"}


@pytest.fixture
def forgetful() -> Iterator[ThreadedApiServer]:
    with threaded_apiserver(crd_dir=REPO / "crds", history=5) as handle:
        yield handle


def test_a_version_older_than_the_history_is_gone(
    forgetful: ThreadedApiServer, tmp_path: Any
) -> None:
    server = forgetful.server
    assert server is not None
    (tmp_path / "ca").write_text(server.ca_pem)
    http = Http(server.url, tmp_path / "ca", server.admin_token)
    base = "/api/v1/namespaces/default/configmaps"
    old = http("GET", base).json()["metadata"]["resourceVersion"]
    for index in range(10):
        http("POST", base, {"metadata": {"name": f"c{index}"}})
    events = _collect(http, f"{base}?watch=true&resourceVersion={old}", 1)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410
    assert events[0]["object"]["reason"] == "Expired"
    listed = http("GET", f"{base}?resourceVersion={old}&resourceVersionMatch=Exact")
    assert listed.status_code == 410
