"""Authentication and RBAC as Cadre's security story needs them: no token, no access; a
service-account token can do exactly what its Roles grant, and dies with its account or pod."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.localcluster.conftest import Http, Kubectl, task_manifest

RBAC = "/apis/rbac.authorization.k8s.io/v1"


def _token(http: Http, namespace: str, account: str, pod: dict[str, Any] | None = None) -> str:
    spec: dict[str, Any] = {"expirationSeconds": 3600}
    if pod is not None:
        spec["boundObjectRef"] = {
            "kind": "Pod",
            "apiVersion": "v1",
            "name": pod["metadata"]["name"],
            "uid": pod["metadata"]["uid"],
        }
    response = http(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec},
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["status"]["token"]
    return token


def _grant_task_reader(http: Http, namespace: str, account: str) -> None:
    role = {
        "metadata": {"name": "task-reader"},
        "rules": [
            {"apiGroups": ["cadre.dev"], "resources": ["tasks"], "verbs": ["get", "list", "watch"]}
        ],
    }
    binding = {
        "metadata": {"name": "task-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "task-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    assert (
        http(
            "POST",
            f"{RBAC}/namespaces/{namespace}/roles",
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", **role},
        ).status_code
        == 201
    )
    assert (
        http(
            "POST",
            f"{RBAC}/namespaces/{namespace}/rolebindings",
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", **binding},
        ).status_code
        == 201
    )


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic YWRtaW46YWRtaW4="])
def test_requests_without_a_valid_token_get_401(http: Http, header: str | None) -> None:
    for path in ("/api/v1/namespaces", "/version", "/apis/cadre.dev/v1alpha1/tasks"):
        response = http(
            "GET", path, token=None, headers={"Authorization": header} if header else None
        )
        assert response.status_code == 401
        assert response.json()["reason"] == "Unauthorized"


def test_a_service_account_does_only_what_its_role_allows(http: Http, namespace: str) -> None:
    http(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "harness"}}
    )
    http("POST", f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks", task_manifest("mine"))
    token = _token(http, namespace, "harness")
    tasks = f"/apis/cadre.dev/v1alpha1/namespaces/{namespace}/tasks"
    denied = http("GET", tasks, token=token)
    assert denied.status_code == 403
    assert denied.json()["message"] == (
        f'tasks.cadre.dev is forbidden: User "system:serviceaccount:{namespace}:harness"'
        f' cannot list resource "tasks" in API group "cadre.dev" in the namespace "{namespace}"'
    )
    _grant_task_reader(http, namespace, "harness")
    assert http("GET", tasks, token=token).status_code == 200
    assert http("GET", tasks + "/mine", token=token).status_code == 200
    patch = http(
        "PATCH",
        tasks + "/mine/status",
        {"status": {"phase": "Running"}},
        "application/merge-patch+json",
        token=token,
    )
    assert patch.status_code == 403
    assert 'cannot patch resource "tasks/status"' in patch.json()["message"]
    assert http("GET", "/api/v1/namespaces/default/secrets", token=token).status_code == 403
    assert (
        http("GET", "/apis/cadre.dev/v1alpha1/tasks", token=token).status_code == 403
    )  # cluster-wide
    assert http("GET", "/apis/cadre.dev/v1alpha1", token=token).status_code == 200  # discovery


def test_a_token_dies_with_its_service_account(http: Http, namespace: str) -> None:
    http("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "brief"}})
    token = _token(http, namespace, "brief")
    assert http("GET", "/version", token=token).status_code == 200
    http("DELETE", f"/api/v1/namespaces/{namespace}/serviceaccounts/brief")
    assert http("GET", "/version", token=token).status_code == 401
    http("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "brief"}})
    assert http("GET", "/version", token=token).status_code == 401  # same name, new uid


def test_a_pod_bound_token_dies_with_its_pod(http: Http, namespace: str) -> None:
    pod = http(
        "POST",
        f"/api/v1/namespaces/{namespace}/pods",
        {"metadata": {"name": "holder"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}},
    ).json()
    token = _token(http, namespace, "default", pod)
    review = http(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        token=token,
    )
    user = review.json()["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace}:default"
    assert user["extra"]["authentication.kubernetes.io/pod-name"] == ["holder"]
    http("DELETE", f"/api/v1/namespaces/{namespace}/pods/holder")
    assert http("GET", "/version", token=token).status_code == 401


def test_cluster_roles_bound_in_a_namespace_apply_only_there(http: Http, namespace: str) -> None:
    http(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "viewer"}}
    )
    http(
        "POST",
        f"{RBAC}/clusterroles",
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": f"{namespace}-cm"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
        },
    )
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "cm"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": f"{namespace}-cm",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": namespace}],
    }
    http("POST", f"{RBAC}/namespaces/{namespace}/rolebindings", binding)
    token = _token(http, namespace, "viewer")
    assert http("GET", f"/api/v1/namespaces/{namespace}/configmaps", token=token).status_code == 200
    assert http("GET", "/api/v1/namespaces/default/configmaps", token=token).status_code == 403


def test_kubectl_auth_can_i_reflects_rbac(kubectl: Kubectl, http: Http, namespace: str) -> None:
    assert kubectl("auth", "can-i", "delete", "tasks", "-n", namespace).stdout.strip() == "yes"
    http("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "asker"}})
    _grant_task_reader(http, namespace, "asker")
    token = _token(http, namespace, "asker")
    can = kubectl(
        "auth", "can-i", "list", "tasks", "-n", namespace, f"--token={token}", check=False
    )
    cannot = kubectl(
        "auth", "can-i", "delete", "tasks", "-n", namespace, f"--token={token}", check=False
    )
    assert can.stdout.strip() == "yes"
    assert cannot.stdout.strip() == "no"


class _Echo(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"{self.path} auth={self.headers.get('Authorization')}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_pod_proxy_reaches_the_pod_without_the_callers_credentials(
    http: Http, namespace: str, echo_server: int
) -> None:
    pods = f"/api/v1/namespaces/{namespace}/pods"
    http(
        "POST",
        pods,
        {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "x:1"}]}},
    )
    status = {"status": {"phase": "Running", "podIP": "127.0.0.1"}}
    http("PATCH", pods + "/web/status", status, "application/merge-patch+json")
    response = http("GET", f"{pods}/web:{echo_server}/proxy/healthz?x=1")
    assert response.status_code == 200
    assert response.text == "/healthz?x=1 auth=None"


def test_kubectl_as_runs_with_the_impersonated_users_rights_only(
    http: Http, kubectl: Kubectl, namespace: str
) -> None:
    """``kubectl --as`` is what platform teams use to check a Role; it used to run as the
    admin, whatever it named. Now the admin becomes the named account, with its rights."""
    http("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "h"}})
    account = f"system:serviceaccount:{namespace}:h"
    denied = kubectl("-n", namespace, f"--as={account}", "get", "tasks", check=False)
    assert denied.returncode == 1
    assert f'User "{account}" cannot list resource "tasks"' in denied.stderr
    _grant_task_reader(http, namespace, "h")
    assert kubectl("-n", namespace, f"--as={account}", "get", "tasks").returncode == 0
    assert kubectl("auth", "whoami", f"--as={account}", "-o", "json").stdout.count(account) == 1
    secrets = kubectl("-n", namespace, f"--as={account}", "get", "secrets", check=False)
    assert secrets.returncode == 1  # nor anything else the account lacks
    # A group alone is not a user (kube-apiserver answers 400 too).
    alone = http("GET", "/api/v1/namespaces", headers={"Impersonate-Group": "system:masters"})
    assert alone.status_code == 400


def test_impersonation_needs_the_impersonate_verb(
    http: Http, kubectl: Kubectl, namespace: str
) -> None:
    http("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "h"}})
    token = _token(http, namespace, "h")
    as_admin = {"Impersonate-User": "kubernetes-admin", "Impersonate-Group": "system:masters"}
    refused = http("GET", "/api/v1/namespaces", token=token, headers=as_admin)
    assert refused.status_code == 403
    assert refused.json()["message"] == (
        f'users "kubernetes-admin" is forbidden: User "system:serviceaccount:{namespace}:h" '
        'cannot impersonate resource "users" in API group "" at the cluster scope'
    )
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": f"impersonate-{namespace}"},
        "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"],
                   "resourceNames": ["auditor"]}],
    }  # fmt: skip
    assert http("POST", f"{RBAC}/clusterroles", role).status_code == 201
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"impersonate-{namespace}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": f"impersonate-{namespace}"},
        "subjects": [{"kind": "ServiceAccount", "name": "h", "namespace": namespace}],
    }  # fmt: skip
    assert http("POST", f"{RBAC}/clusterrolebindings", binding).status_code == 201
    review = http(
        "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        token=token, headers={"Impersonate-User": "auditor"},
    )  # fmt: skip
    assert review.status_code == 201, review.text
    assert review.json()["status"]["userInfo"]["username"] == "auditor"
    # Allowed to be "auditor", not to add a group to it.
    grouped = {"Impersonate-User": "auditor", "Impersonate-Group": "system:masters"}
    assert http("GET", "/api/v1/namespaces", token=token, headers=grouped).status_code == 403
