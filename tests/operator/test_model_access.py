"""The rules that decide whether an Agent's key may reach a harness (pure functions): the
endpoint allow-list cannot be fooled by look-alike URLs, and the Secret must opt in."""

from __future__ import annotations

from typing import Any

import pytest
from cadre.api.meta import SecretKeyReference
from cadre.api.names import MODEL_KEY_LABEL
from cadre.operator.model_access import endpoint_allowed, parse_endpoints, refusal

ALLOWED = parse_endpoints(
    "https://api.anthropic.com, https://gw.internal/anthropic, http://127.0.0.1:*"
)
REF = SecretKeyReference(name="anthropic")


@pytest.mark.parametrize(
    "url",
    [
        "https://api.anthropic.com",
        "https://api.anthropic.com/",
        "https://API.Anthropic.com:443",
        "https://gw.internal/anthropic",
        "https://gw.internal/anthropic/v1",
        "http://127.0.0.1:4011",
    ],
)
def test_allowed_endpoints(url: str) -> None:
    assert endpoint_allowed(url, ALLOWED)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://api.anthropic.com", "another scheme"),
        ("https://api.anthropic.com:8443", "another port"),
        ("https://api.anthropic.com.attacker.example", "a look-alike host"),
        ("https://api.anthropic.com@attacker.example", "user info hiding the real host"),
        ("https://attacker.example/https://api.anthropic.com", "the allowed URL in the path"),
        ("https://gw.internal/anthropic-evil", "a path that only starts alike"),
        ("https://gw.internal/", "above the allowed path"),
        ("https://api.anthropic.com/?to=attacker", "a query"),
        ("http://127.0.0.1:notaport", "a port that does not parse"),
        ("http://127.0.0.1:*", "a wildcard in the Agent's own URL"),
        ("ftp://api.anthropic.com", "not http"),
    ],
)
def test_refused_endpoints(url: str, why: str) -> None:
    assert not endpoint_allowed(url, ALLOWED), why


def _secret(labels: dict[str, str], data: dict[str, str] | None = None) -> dict[str, Any]:
    data = data or {"api-key": "eA=="}
    return {"metadata": {"name": "anthropic", "labels": labels}, "data": data}


def test_a_labelled_secret_and_an_allowed_endpoint_pass() -> None:
    assert refusal(_secret({MODEL_KEY_LABEL: "true"}), REF, None, ALLOWED) is None
    assert refusal(_secret({MODEL_KEY_LABEL: "true"}), REF, "http://127.0.0.1:1", ALLOWED) is None


@pytest.mark.parametrize(
    ("secret", "base_url", "reason", "permanent"),
    [
        (None, None, "SecretMissing", False),
        (_secret({}), None, "SecretNotModelKey", False),
        (_secret({MODEL_KEY_LABEL: "yes"}), None, "SecretNotModelKey", False),
        (_secret({MODEL_KEY_LABEL: "true"}, {"token": "eA=="}), None, "SecretKeyMissing", False),
        # The endpoint is checked first: a refused endpoint says so even without the Secret.
        (None, "https://attacker.example", "EndpointNotAllowed", True),
    ],
)
def test_each_rule_has_its_reason(
    secret: dict[str, Any] | None, base_url: str | None, reason: str, permanent: bool
) -> None:
    found = refusal(secret, REF, base_url, ALLOWED)
    assert found is not None
    assert (found.reason, found.permanent) == (reason, permanent)


def test_an_allow_list_entry_that_does_not_parse_is_named() -> None:
    with pytest.raises(ValueError, match=r"'gw\.internal'"):
        parse_endpoints("https://api.anthropic.com,gw.internal")
