"""Files the kube-apiserver reads besides its certificates: the admission configuration
with the certificate it presents to webhooks, and the audit policy.

Imports only the standard library and :mod:`devenv.pki`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from devenv.pki import CertificateAuthority, cert_pem, key_pem, write_private

#: Audit policy of ``audit_log=True``: every request once, when its response completes.
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted, Panic]
rules:
  - level: Metadata
"""


def audit_flags(state_dir: Path, audit_log_file: Path) -> list[str]:
    """kube-apiserver flags for an audit log (JSON lines, level Metadata) in ``audit_log_file``."""
    policy = state_dir / "audit-policy.yaml"
    policy.write_text(AUDIT_POLICY)
    audit_log_file.unlink(missing_ok=True)
    return [
        f"--audit-policy-file={policy}",
        f"--audit-log-path={audit_log_file}",
        "--audit-log-format=json",
        "--audit-log-maxbackup=0",
        "--audit-log-maxsize=0",
    ]


def write_webhook_client_credentials(state_dir: Path, pki: Path, ca_crt: Path) -> None:
    """The certificate the kube-apiserver presents to every admission webhook (user
    ``*`` of the ValidatingAdmissionWebhook plugin's kubeConfigFile), signed by a CA of
    its own, and the admission configuration that names it."""
    ca_key = pki / "webhook-client-ca.key"
    if ca_crt.is_file() and ca_key.is_file():
        ca = CertificateAuthority.load(ca_crt, ca_key)
    else:
        ca = CertificateAuthority.create("vectorschema-local-webhook-client-ca")
        ca.save(ca_crt, ca_key)
    cert, key = ca.issue("kube-apiserver-webhook-client")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    kubeconfig = state_dir / "admission-webhooks.kubeconfig"
    users = {
        "apiVersion": "v1",
        "kind": "Config",
        "users": [
            {
                "name": "*",
                "user": {
                    "client-certificate-data": b64(cert_pem(cert)),
                    "client-key-data": b64(key_pem(key)),
                },
            }
        ],
    }
    write_private(kubeconfig, (json.dumps(users, indent=2) + "\n").encode())
    plugin = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "WebhookAdmissionConfiguration",
        "kubeConfigFile": str(kubeconfig),
    }
    config = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {"name": "ValidatingAdmissionWebhook", "configuration": plugin},
            {"name": "MutatingAdmissionWebhook", "configuration": plugin},
        ],
    }
    write_private(
        state_dir / "admission-config.yaml", (json.dumps(config, indent=2) + "\n").encode()
    )
