"""An Agent's egress certificate authority: made once by the operator when the Agent first
uses ``Hosts`` egress, kept in a Secret only its harness pod mounts (certificate and key) and
published to its sandboxes as a ConfigMap (the certificate alone). The harness's egress proxy
signs, with it, the certificates it presents for the hosts whose requests carry a credential.
"""

from __future__ import annotations

import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cadre.api.meta import owner_reference
from cadre.api.names import AGENT_LABEL, COMPONENT_LABEL

YEARS = 5


def egress_ca_name(agent: str) -> str:
    return f"egress-ca-{agent}"


def new_authority(agent: str, namespace: str) -> tuple[str, str]:
    """A fresh CA (certificate PEM, key PEM) for one Agent; it may sign only server
    certificates (no intermediate CAs: path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cadre egress"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{agent}.{namespace} egress CA"[:64]),
    ])  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365 * YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), private.decode()


def _metadata(namespace: str, agent: str, agent_uid: str) -> dict[str, Any]:
    return {
        "name": egress_ca_name(agent),
        "namespace": namespace,
        "labels": {COMPONENT_LABEL: "egress-ca", AGENT_LABEL: agent},
        "ownerReferences": [owner_reference("Agent", agent, agent_uid)],
    }


def build_ca_secret(
    namespace: str, agent: str, agent_uid: str, cert_pem: str, key_pem: str
) -> dict[str, Any]:
    """Mounted by the harness pod only."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": _metadata(namespace, agent, agent_uid),
        "stringData": {"tls.crt": cert_pem, "tls.key": key_pem},
    }


def build_ca_configmap(namespace: str, agent: str, agent_uid: str, cert_pem: str) -> dict[str, Any]:
    """Mounted by the Agent's sandboxes: the certificate, never the key."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(namespace, agent, agent_uid),
        "data": {"ca.crt": cert_pem},
    }
