"""The local cluster's certificate authority and serving certificate.

kubectl sends bearer tokens only over HTTPS, so the API server serves TLS with a CA it makes
at start; the kubeconfig carries that CA (``certificate-authority-data``) and every namespace
gets it in the ``kube-root-ca.crt`` ConfigMap, as in a real cluster.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import trustme


@dataclass(frozen=True)
class Certificates:
    ca_pem: str
    server_context: ssl.SSLContext


def issue(hosts: list[str]) -> Certificates:
    ca = trustme.CA(organization_name="Cadre local cluster")
    leaf = ca.issue_cert(*hosts)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return Certificates(ca.cert_pem.bytes().decode(), context)
