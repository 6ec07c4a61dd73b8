"""The operator's reads and writes (``cadre.operator.apply``) share one kept-alive connection
to the API server, whatever the answer: found, created, refused with 409, missing. Each answer
is taken undecoded, and urllib3 keeps such a connection out of its pool until it is released;
forgetting that once made every call a new TLS handshake on both sides, which dominated the
operator's CPU under load without changing any result (only this test sees it)."""

from __future__ import annotations

import kubernetes
from cadre.operator import apply

from tests.operator.conftest import NS


def _connections(api_client: kubernetes.client.ApiClient) -> tuple[int, int]:
    """TLS connections opened and requests sent, over all of the client's pools."""
    pools = list(api_client.rest_client.pool_manager.pools._container.values())
    return sum(p.num_connections for p in pools), sum(p.num_requests for p in pools)


def test_every_kind_of_answer_leaves_the_connection_in_the_pool(
    apply_client: kubernetes.client.ApiClient,
) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": NS}}
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "r", "namespace": NS}, "rules": [],
    }  # fmt: skip
    for _ in range(3):
        assert apply.get_pod(NS, "missing") is None  # 404
        apply.ensure(secret)  # 201, then 409
        apply.ensure(role)  # 201, then 409 and a patch
        apply.ensure_exists(secret)  # a read that finds it
        assert apply.get_secret(NS, "s")  # 200, decoded
        assert not apply.patch_task_status(NS, "missing", {"phase": "Running"})  # 404
        apply.delete_sandbox(NS, "missing", keep_workspace=False)  # five 404s
    opened, sent = _connections(apply_client)
    assert sent > 30
    assert opened == 1, f"{opened} connections for {sent} requests"
