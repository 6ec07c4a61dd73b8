"""Pure parts of the server: protobuf bodies (checked against bytes kubectl 1.32 sent),
label and field selectors, and the three patch types."""

from __future__ import annotations

import pytest
from cadre.localcluster.apiserver import builtin_schemas, patches, protobuf
from cadre.localcluster.apiserver.selectors import matcher, parse_label_selector
from cadre.localcluster.apiserver.status import ApiError

# Captured from `kubectl create secret generic s1 --from-literal=a=b --type=foo`.
SECRET = (
    b'k8s\x00\n\x0c\n\x02v1\x12\x06Secret\x12!\n\x12\n\x02s1\x12\x00\x1a\x00"\x00*\x002\x00'
    b'8\x00B\x00\x12\x06\n\x01a\x12\x01b\x1a\x03foo\x1a\x00"\x00'
)
# Captured from `kubectl auth can-i get pods/log --subresource=log -n kube-system` (kubectl
# reads "pods/log" as resource/name, hence the name).
REVIEW = (
    b"k8s\x00\n2\n\x17authorization.k8s.io/v1\x12\x17SelfSubjectAccessReview\x12F\n\x10\n\x00"
    b'\x12\x00\x1a\x00"\x00*\x002\x008\x00B\x00\x12(\n&\n\x0bkube-system\x12\x03get\x1a\x00'
    b'"\x00*\x04pods2\x03log:\x03log\x1a\x08\x08\x00\x12\x00\x1a\x00 \x00\x1a\x00"\x00'
)


def test_protobuf_secret_decodes_to_json() -> None:
    assert protobuf.decode_body(SECRET) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s1"},
        "data": {"a": "Yg=="},
        "type": "foo",
    }


def test_protobuf_access_review_decodes_to_json() -> None:
    decoded = protobuf.decode_body(REVIEW)
    assert decoded["spec"]["resourceAttributes"] == {
        "namespace": "kube-system",
        "verb": "get",
        "resource": "pods",
        "subresource": "log",
        "name": "log",
    }


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"not protobuf", 400), (SECRET[:-12], 400), (SECRET.replace(b"Secret", b"Widget"), 415)],
)
def test_bad_protobuf_bodies_are_refused_clearly(body: bytes, code: int) -> None:
    with pytest.raises(ApiError) as caught:
        protobuf.decode_body(body)
    assert caught.value.code == code


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("a=b", {"a": "b"}, True),
        ("a==b", {"a": "c"}, False),
        ("a!=b", {}, True),
        ("a in (b, c)", {"a": "c"}, True),
        ("a notin (b,c)", {"a": "d"}, True),
        ("a,!b", {"a": "1"}, True),
        ("a,!b", {"a": "1", "b": "2"}, False),
        ("n>3", {"n": "4"}, True),
        ("", {"x": "y"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], matches: bool) -> None:
    obj = {"metadata": {"name": "x", "labels": labels}}
    assert matcher(selector, "", "ConfigMap", False)(obj) is matches


@pytest.mark.parametrize("bad", ["a in (b", "=b", "a=b c", "a=-b-"])
def test_bad_label_selectors_are_400(bad: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_label_selector(bad)
    assert caught.value.code == 400


def test_field_selectors() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {"nodeName": "local"},
        "status": {"phase": "Running"},
    }
    assert matcher("", "status.phase=Running,spec.nodeName!=other", "Pod", False)(pod)
    assert not matcher("", "metadata.name=q", "Pod", False)(pod)


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert patches.merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }


def test_strategic_merge_patch_uses_kubernetes_merge_keys() -> None:
    schema = builtin_schemas.structural("io.k8s.api.core.v1.Pod")
    pod = {
        "metadata": {"finalizers": ["a"]},
        "spec": {
            "containers": [{"name": "x", "image": "1", "env": [{"name": "A", "value": "1"}]}],
            "volumes": [{"name": "v"}],
        },
    }
    patch = {
        "metadata": {"finalizers": ["b"]},
        "spec": {
            "containers": [
                {"name": "x", "env": [{"name": "B", "value": "2"}]},
                {"name": "y", "image": "2"},
            ],
            "volumes": [{"name": "v", "$patch": "delete"}],
            "$setElementOrder/containers": [{"name": "x"}, {"name": "y"}],
        },
    }
    result = patches.strategic_merge_patch(pod, patch, schema)
    assert result["metadata"]["finalizers"] == ["a", "b"]
    assert result["spec"]["containers"] == [
        {
            "name": "x",
            "image": "1",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        },
        {"name": "y", "image": "2"},
    ]
    assert result["spec"]["volumes"] == []


def test_json_patch_failures_are_422() -> None:
    with pytest.raises(ApiError) as caught:
        patches.json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    assert caught.value.code == 422
