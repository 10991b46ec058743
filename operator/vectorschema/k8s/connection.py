"""The one connection policy: which Qdrant a Namespace, the operator and the CLI talk to.

- the operator's default: `QDRANT_URL` (+ `QDRANT_API_KEY`), else the embedded local
  store (`QDRANT_PATH`, or the default path);
- a Namespace: its `spec.qdrant.url` (else `QDRANT_URL`) with the API key from its
  `spec.qdrant.apiKeySecretRef`, else the operator's default;
- the CLI: `--qdrant-url` (or `QDRANT_URL`, + `QDRANT_API_KEY`), else `--qdrant-path`,
  else none (plan as if the collection did not exist).

Each decision is a `Target` (pure, unit-tested); the shared gateway for it comes from
`qdrant.pool`. `ConnectionUnavailable` is raised here when a Namespace's connection cannot
be built; the controller's failure table maps it (as a `ConnectorError`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

from vectorschema.api import NamespaceResource
from vectorschema.controller.errors import ConnectorError
from vectorschema.controller.reconcile import Connector
from vectorschema.k8s import kube
from vectorschema.qdrant.client import ClientGateway, Target
from vectorschema.qdrant.pool import connect_to

_log = logging.getLogger(__name__)

SecretReader = Callable[[str, str, str], str]


class ConnectionUnavailable(ConnectorError):
    """The namespace's Qdrant connection cannot be built (e.g. its Secret is missing)."""


def operator_target(env: Mapping[str, str] = os.environ) -> Target:
    """The operator's default connection."""
    url = env.get("QDRANT_URL") or None
    if url is not None:
        return Target(url=url, api_key=env.get("QDRANT_API_KEY") or None)
    if env.get("QDRANT_API_KEY"):
        _log.warning("QDRANT_API_KEY is set without QDRANT_URL: ignored for the local store")
    return Target(path=env.get("QDRANT_PATH") or None)


def namespace_target(
    resource: NamespaceResource,
    read_secret: SecretReader = kube.read_secret_key,
    env: Mapping[str, str] = os.environ,
) -> Target:
    """How this Namespace reaches Qdrant: its own url/Secret, or the operator's default."""
    conn = resource.spec.qdrant
    if conn is None or (conn.url is None and conn.api_key_secret_ref is None):
        return operator_target(env)
    api_key = None
    if conn.api_key_secret_ref is not None:
        ref = conn.api_key_secret_ref
        try:
            api_key = read_secret(resource.kube_namespace, ref.name, ref.key)
        except kube.SecretMissing as exc:
            raise ConnectionUnavailable(str(exc)) from None
    url = conn.url or env.get("QDRANT_URL")
    if url is None:
        raise ConnectionUnavailable(
            "spec.qdrant.apiKeySecretRef is set but neither spec.qdrant.url nor "
            "QDRANT_URL is: an API key needs a Qdrant server"
        )
    return Target(url=url, api_key=api_key)


def cli_target(
    url: str | None, path: str | None, env: Mapping[str, str] = os.environ
) -> Target | None:
    """The CLI's connection: a flag, else `QDRANT_URL`; None to plan without a Qdrant."""
    url = url or (None if path else env.get("QDRANT_URL"))
    if url:
        return Target(url=url, api_key=env.get("QDRANT_API_KEY") or None)
    if path:
        return Target(path=path)
    return None


def connector_for(resource: NamespaceResource) -> Connector:
    """The Namespace's connection, built when the pass first needs it."""
    return lambda: connect_to(namespace_target(resource))


def default_from_env() -> ClientGateway:
    """The shared gateway of the operator's default connection."""
    return connect_to(operator_target())
