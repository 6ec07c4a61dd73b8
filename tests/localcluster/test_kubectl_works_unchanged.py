"""The real kubectl (1.32) against the local API server: the commands a platform engineer
types on Cadre's objects behave as on a real cluster."""

from __future__ import annotations

import json
import threading
import time

import kubernetes
import pytest
import yaml

from tests.localcluster.conftest import REPO, Kubectl, agent_manifest, task_manifest


def _apply(kubectl: Kubectl, namespace: str, *docs: dict[str, object], check: bool = True):  # type: ignore[no-untyped-def]
    return kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(docs), check=check)


def test_discovery_lists_cadre_kinds_with_short_names(kubectl: Kubectl) -> None:
    out = kubectl("api-resources", "--api-group=cadre.dev").stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["tasks"][1] == "tsk"
    assert rows["agents"][1] == "agt"
    assert rows["teams"][1] == "tm"
    assert "cadre" in kubectl("api-resources", "--categories=cadre", "-o", "name").stdout + "cadre"


def test_apply_the_examples_then_apply_again_is_unchanged(kubectl: Kubectl, namespace: str) -> None:
    first = kubectl("apply", "-n", namespace, "-f", str(REPO / "examples/basic")).stdout
    assert "task.cadre.dev/slugify created" in first
    again = kubectl("apply", "-n", namespace, "-f", str(REPO / "examples/basic/task.yaml")).stdout
    assert again.strip() == "task.cadre.dev/slugify unchanged"
    listed = kubectl("get", "cadre", "-n", namespace, "-o", "name").stdout.split()
    assert "task.cadre.dev/slugify" in listed
    assert "team.cadre.dev/platform" in listed


def test_get_prints_the_crd_printer_columns(kubectl: Kubectl, namespace: str) -> None:
    _apply(kubectl, namespace, task_manifest("columns"))
    out = kubectl("get", "tasks", "-n", namespace).stdout.splitlines()
    assert out[0].split() == [
        "NAME",
        "AGENT",
        "PHASE",
        "PARENT",
        "TURNS",
        "COST",
        "WAITING-FOR",
        "AGE",
    ]
    assert out[1].split()[0] == "columns"
    wide = kubectl("get", "tasks", "-n", namespace, "-o", "wide").stdout.splitlines()[0]
    assert "TITLE" in wide.split()


def test_explain_describes_cadre_fields(kubectl: Kubectl) -> None:
    out = kubectl("explain", "task.spec.assignee").stdout
    assert "KIND:       Task" in out
    assert "agent" in out
    assert "team" in out
    assert "Who works the Task" in out


def test_an_invalid_manifest_is_refused_with_the_crd_message(
    kubectl: Kubectl, namespace: str
) -> None:
    both = task_manifest("both", assignee={"agent": "lead", "team": "platform"})
    result = _apply(kubectl, namespace, both, check=False)
    assert result.returncode != 0
    assert 'The Task "both" is invalid' in result.stderr
    assert "exactly one of spec.assignee.agent or spec.assignee.team must be set" in result.stderr
    assert kubectl("get", "tasks", "-n", namespace, "-o", "name").stdout == ""


def test_an_unknown_field_is_refused_by_strict_validation(kubectl: Kubectl, namespace: str) -> None:
    typo = task_manifest("typo")
    typo["spec"]["promtp"] = "typo"  # type: ignore[index]
    result = _apply(kubectl, namespace, typo, check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.promtp"' in result.stderr


def test_patches_of_each_type(kubectl: Kubectl, namespace: str) -> None:
    _apply(kubectl, namespace, task_manifest("patched", title="before"))
    kubectl(
        "patch",
        "task",
        "patched",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"title":"merged"}}',
    )
    kubectl(
        "patch",
        "task",
        "patched",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/title","value":"json"}]',
    )
    assert (
        kubectl("get", "task", "patched", "-n", namespace, "-o", "jsonpath={.spec.title}").stdout
        == "json"
    )
    refused = kubectl(
        "patch",
        "task",
        "patched",
        "-n",
        namespace,
        "--type=strategic",
        "-p",
        '{"spec":{"title":"x"}}',
        check=False,
    )
    assert refused.returncode != 0
    assert "UnsupportedMediaType" in refused.stderr or "unknown format" in refused.stderr
    kubectl("create", "configmap", "cm", "-n", namespace, "--from-literal=a=1")
    kubectl("patch", "configmap", "cm", "-n", namespace, "-p", '{"data":{"b":"2"}}')
    data = json.loads(kubectl("get", "configmap", "cm", "-n", namespace, "-o", "json").stdout)[
        "data"
    ]
    assert data == {"a": "1", "b": "2"}


def test_transition_rules_refuse_changing_an_immutable_field(
    kubectl: Kubectl, namespace: str
) -> None:
    _apply(kubectl, namespace, task_manifest("fixed"))
    result = kubectl(
        "patch",
        "task",
        "fixed",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"prompt":"other"}}',
        check=False,
    )
    assert result.returncode != 0
    assert "spec.prompt is immutable" in result.stderr


def test_label_selectors(kubectl: Kubectl, namespace: str) -> None:
    for name, tier in (("a", "web"), ("b", "db"), ("c", None)):
        manifest = task_manifest(name)
        if tier:
            manifest["metadata"]["labels"] = {"tier": tier}  # type: ignore[index]
        _apply(kubectl, namespace, manifest)

    def names(selector: str) -> list[str]:
        out = kubectl("get", "tasks", "-n", namespace, "-l", selector, "-o", "name").stdout
        return sorted(line.split("/")[-1] for line in out.split())

    assert names("tier=web") == ["a"]
    assert names("tier!=web") == ["b", "c"]
    assert names("tier in (web,db)") == ["a", "b"]
    assert names("tier notin (web)") == ["b", "c"]
    assert names("tier") == ["a", "b"]
    assert names("!tier") == ["c"]


def test_wait_for_a_condition_set_later(
    kubectl: Kubectl, namespace: str, api: kubernetes.client.ApiClient
) -> None:
    _apply(kubectl, namespace, agent_manifest("waiter"))
    custom = kubernetes.client.CustomObjectsApi(api)

    def become_ready() -> None:
        time.sleep(1.0)
        condition = {
            "type": "Ready",
            "status": "True",
            "reason": "HarnessRunning",
            "message": "ok",
            "lastTransitionTime": "2026-11-24T00:00:00Z",
        }
        custom.patch_namespaced_custom_object_status(
            "cadre.dev",
            "v1alpha1",
            namespace,
            "agents",
            "waiter",
            {"status": {"conditions": [condition]}},
        )

    thread = threading.Thread(target=become_ready)
    thread.start()
    result = kubectl(
        "wait", "agent/waiter", "-n", namespace, "--for=condition=Ready", "--timeout=20s"
    )
    thread.join()
    assert "condition met" in result.stdout


def test_delete_waits_for_finalizers(kubectl: Kubectl, namespace: str) -> None:
    manifest = task_manifest("held")
    manifest["metadata"]["finalizers"] = ["cadre.dev/test"]  # type: ignore[index]
    _apply(kubectl, namespace, manifest)
    kubectl("delete", "task", "held", "-n", namespace, "--wait=false")
    stamp = kubectl(
        "get", "task", "held", "-n", namespace, "-o", "jsonpath={.metadata.deletionTimestamp}"
    ).stdout
    assert stamp
    kubectl(
        "patch",
        "task",
        "held",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
    )
    gone = kubectl("get", "task", "held", "-n", namespace, check=False)
    assert "NotFound" in gone.stderr


def test_typed_create_commands_send_protobuf_and_work(kubectl: Kubectl, namespace: str) -> None:
    kubectl("create", "secret", "generic", "key", "-n", namespace, "--from-literal=api-key=sk-test")
    value = kubectl(
        "get", "secret", "key", "-n", namespace, "-o", "jsonpath={.data.api-key}"
    ).stdout
    assert value == "c2stdGVzdA=="
    kubectl("create", "serviceaccount", "robot", "-n", namespace)
    kubectl(
        "create", "role", "reader", "-n", namespace, "--verb=get,list", "--resource=tasks.cadre.dev"
    )
    kubectl(
        "create",
        "rolebinding",
        "robot-reads",
        "-n",
        namespace,
        "--role=reader",
        f"--serviceaccount={namespace}:robot",
    )
    assert kubectl("auth", "can-i", "create", "tasks", "-n", namespace).stdout.strip() == "yes"
    token = kubectl("create", "token", "robot", "-n", namespace).stdout.strip()
    assert token


def test_logs_of_an_unscheduled_pod_say_why(kubectl: Kubectl, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "idle"},
        "spec": {"containers": [{"name": "main", "image": "cadre-sandbox:dev"}]},
    }
    _apply(kubectl, namespace, pod)
    result = kubectl("logs", "idle", "-n", namespace, check=False)
    assert result.returncode != 0
    assert "pod idle does not have a host assigned" in result.stderr


@pytest.mark.parametrize("kind", ["tasks", "agents", "teams"])
def test_get_all_namespaces_shows_the_namespace_column(kubectl: Kubectl, kind: str) -> None:
    out = kubectl("get", kind, "-A").stdout
    if out:
        assert out.splitlines()[0].split()[0] == "NAMESPACE"
