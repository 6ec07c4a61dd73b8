"""Whom the harness trusts when it calls out over HTTPS (hook webhooks, MCP servers): the
certificates of a ``caBundle`` (base64 PEM, as in Kubernetes' admission webhooks) when one is
given, else the system's roots."""

from __future__ import annotations

import base64
import binascii
import ssl


class CaBundleError(ValueError):
    """A ``caBundle`` that is not base64 PEM certificates."""


def trusting(ca_bundle: str | None) -> ssl.SSLContext:
    if not ca_bundle:
        return ssl.create_default_context()
    try:
        pem = base64.b64decode(ca_bundle, validate=True).decode()
        return ssl.create_default_context(cadata=pem)
    except (binascii.Error, UnicodeDecodeError, ssl.SSLError) as err:
        raise CaBundleError(f"caBundle is not base64 PEM certificates: {err}") from err
