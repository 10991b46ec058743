"""The webhook's serving certificate: mounted ones if present, else made here.

In a cluster the certificate comes from cert-manager or from the Helm chart (a Secret
mounted into the cert directory as `tls.crt`, `tls.key` and `ca.crt`), or, with the
kustomize base (which cannot make one at install time), from a Secret the first replica
creates and the others read (`settings.admission_server`). An operator run
outside a cluster (`make run`, the e2e tests) has none: it makes a CA and a serving
certificate with `cryptography` (as the local control plane's PKI does), writes them to
the cert directory (keys 0600), and hands the CA to the API server in the webhook
configuration's `caBundle`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERT_FILE, KEY_FILE, CA_FILE = "tls.crt", "tls.key", "ca.crt"


@dataclass(frozen=True)
class ServingCert:
    """Where the server's certificate and key are, and the CA the API server trusts."""

    certfile: Path
    keyfile: Path
    cafile: Path
    generated: bool


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _sans(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_serving_cert(hosts: Sequence[str], days: int = 365) -> tuple[bytes, bytes, bytes]:
    """(CA cert, serving cert, serving key) as PEM: a fresh CA that signs a server
    certificate valid for `hosts` (DNS names or IP addresses; the first is the CN)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vectorschema-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_sans(hosts)), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ca.public_bytes(pem), cert.public_bytes(pem), _key_pem(key)


def write_cert(cert_dir: Path, ca: bytes, cert: bytes, key: bytes) -> ServingCert:
    """Write the three PEM files into `cert_dir` (the key 0600)."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    files = ServingCert(cert_dir / CERT_FILE, cert_dir / KEY_FILE, cert_dir / CA_FILE, True)
    _write(files.keyfile, key, 0o600)
    _write(files.certfile, cert, 0o644)
    _write(files.cafile, ca, 0o644)
    return files


def serving_cert(cert_dir: Path, hosts: Sequence[str]) -> ServingCert:
    """The certificate in `cert_dir` if there is one (mounted; `ca.crt` may be missing
    when the configuration's caBundle comes from elsewhere), else a new one for `hosts`
    written there."""
    files = ServingCert(cert_dir / CERT_FILE, cert_dir / KEY_FILE, cert_dir / CA_FILE, False)
    if files.certfile.is_file() and files.keyfile.is_file():
        if not files.cafile.is_file():
            return ServingCert(files.certfile, files.keyfile, files.certfile, False)
        return files
    return write_cert(cert_dir, *make_serving_cert(hosts))
