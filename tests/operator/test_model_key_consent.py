"""Only a Secret meant as a model key becomes one, and only for an endpoint the operator allows:
the attack this closes is an Agent naming any Secret (``db-password``) with ``baseURL`` at a
server its author controls. The real operator process against the local cluster."""

from __future__ import annotations

import asyncio
from typing import Any

from cadre.api.names import MODEL_KEY_LABEL

from tests.harness.conftest import ModelFactory, until
from tests.localcluster.conftest import Http, Served, for_pods
from tests.operator.conftest import CADRE, NS, model_key_secret

STEPS = {"agents": {"thief": [{"text": "Nothing to do."}]}}
HARNESS = f"/apis/apps/v1/namespaces/{NS}/statefulsets/harness-thief"


def _agent(http: Http, secret: str, base_url: str) -> None:
    agent = {
        "apiVersion": "cadre.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "thief"},
        "spec": {"role": "r", "model": "claude-sonnet-4-6", "baseURL": for_pods(base_url),
                 "apiKeySecretRef": {"name": secret}},
    }  # fmt: skip
    assert http("POST", f"{CADRE}/agents", agent).status_code == 201


def _ready(http: Http) -> dict[str, Any] | None:
    status = http("GET", f"{CADRE}/agents/thief").json().get("status") or {}
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)


def _label(http: Http, secret: str, value: str | None) -> None:
    patch = {"metadata": {"labels": {MODEL_KEY_LABEL: value}}}
    response = http(
        "PATCH", f"/api/v1/namespaces/{NS}/secrets/{secret}", patch, "application/merge-patch+json"
    )
    assert response.status_code == 200, response.text


def _warned(http: Http, reason: str) -> bool:
    events = http("GET", f"/api/v1/namespaces/{NS}/events").json()["items"]
    return any(e["reason"] == reason and e["type"] == "Warning" for e in events)


async def test_a_secret_not_labelled_as_a_model_key_never_reaches_a_harness(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory
) -> None:
    http = cluster.http
    url, model = await scripted(STEPS)
    secret = model_key_secret("db-password", "hunter2", labelled=False)
    assert http("POST", f"/api/v1/namespaces/{NS}/secrets", secret).status_code == 201
    _agent(http, "db-password", url)

    refused = await until(lambda: (c := _ready(http)) and c["reason"] == "SecretNotModelKey" and c)
    assert refused["status"] == "False"
    assert MODEL_KEY_LABEL in refused["message"]
    assert "db-password" in refused["message"]
    assert http("GET", HARNESS).status_code == 404
    assert await until(lambda: _warned(http, "SecretNotModelKey"))

    # The owner consents: the harness starts (the refusal is retried, not final).
    _label(http, "db-password", "true")
    await until(lambda: (c := _ready(http)) and c["status"] == "True")

    # Consent withdrawn: the harness holding the key is removed, not left running.
    _label(http, "db-password", None)
    await until(lambda: (c := _ready(http)) and c["reason"] == "SecretNotModelKey")
    await until(lambda: http("GET", HARNESS).status_code == 404)
    assert model.requests == []  # no Task was given: the harness never called out


async def test_a_base_url_the_operator_does_not_allow_gets_no_harness(
    cluster: Served, operator: asyncio.subprocess.Process, scripted: ModelFactory
) -> None:
    http = cluster.http
    url, _ = await scripted(STEPS)
    secret = model_key_secret("anthropic", "sk-real-key")
    assert http("POST", f"/api/v1/namespaces/{NS}/secrets", secret).status_code == 201
    # The operator under test allows http://127.0.0.1:* (its scripted models) only.
    _agent(http, "anthropic", "https://models.attacker.example/v1")

    refused = await until(lambda: (c := _ready(http)) and c["reason"] == "EndpointNotAllowed" and c)
    assert "spec.baseURL" in refused["message"]
    assert "https://models.attacker.example/v1" in refused["message"]
    assert http("GET", HARNESS).status_code == 404
    assert await until(lambda: _warned(http, "EndpointNotAllowed"))

    # Fixing the spec is enough: the refusal was final only for that spec.
    patch = {"spec": {"baseURL": for_pods(url)}}
    http("PATCH", f"{CADRE}/agents/thief", patch, "application/merge-patch+json")
    await until(lambda: (c := _ready(http)) and c["status"] == "True")
    env = http("GET", HARNESS).json()["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "CADRE_MODEL_BASE_URL", "value": for_pods(url)} in env
