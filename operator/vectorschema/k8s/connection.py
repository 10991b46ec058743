"""The one connection policy: which Qdrant a Namespace, the operator and the CLI talk to.

- the operator's default: `QDRANT_URL` (+ `QDRANT_API_KEY`), else the embedded local
  store (`QDRANT_PATH`, or the default path);
- a Namespace: its `spec.qdrant.url` (else `QDRANT_URL`) with the API key from its
  `spec.qdrant.apiKeySecretRef`, else the operator's default; always within the admin's
  policy (`core.policy`): the URL must parse strictly and be on the allowlist, the Secret
  must carry the admin's label, the key must be one line of printable ASCII. A refusal is
  raised before any connection is made, so nothing (no key, no request) leaves for a URL
  the admin did not allow;
- the CLI: `--qdrant-url` (or `QDRANT_URL`, + `QDRANT_API_KEY`), else `--qdrant-path`,
  else none (plan as if the collection did not exist).

Each decision is a `Target` (pure, unit-tested); the shared gateway for it comes from
`qdrant.pool`. `ConnectionUnavailable` (transient: a Secret not there yet) and
`ConnectionRefused` (needs a change) are raised here; the controller's failure table maps
them. Every API key read is remembered by the scrubber (`core.policy.SCRUBBER`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vectorschema.api import NamespaceResource, Reason
from vectorschema.controller.errors import ConnectionRefused, ConnectorError
from vectorschema.controller.metering import MeteredGateway, Recorder, server_label
from vectorschema.controller.reconcile import Connector
from vectorschema.core.policy import (
    ALLOWED_URLS_ENV,
    SCRUBBER,
    InvalidKey,
    InvalidUrl,
    Policy,
    api_key_from_secret,
    parse_url,
)
from vectorschema.k8s import kube
from vectorschema.qdrant.client import ClientGateway, Target
from vectorschema.qdrant.errors import GatewayError
from vectorschema.qdrant.pool import connect_to

_log = logging.getLogger(__name__)

#: (kubernetes namespace, Secret name, key) -> the API key; raises ConnectorError.
SecretReader = Callable[[str, str, str], str]

#: How an operation records the embedded Qdrant as its connection.
EMBEDDED = "embedded"


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


@dataclass(frozen=True)
class LabelledSecrets:
    """The Secrets the operator may read: those its label-selected watch delivered, as
    (namespace, name) -> {"labels": ..., "data": ...}. A Secret not among them is looked
    up by metadata only, to tell "missing" from "not labelled"."""

    secrets: Mapping[tuple[str, str], Mapping[str, Any]]
    policy: Policy
    exists: Callable[[str, str], bool] = kube.secret_exists

    def read(self, namespace: str, name: str, key: str) -> str:
        where = f"Secret {namespace}/{name}"
        entry = self.secrets.get((namespace, name))
        if entry is None or not self.policy.secret_allowed(entry.get("labels")):
            if entry is None and not self.exists(namespace, name):
                raise ConnectionUnavailable(f"{where} not found")
            raise ConnectionRefused(
                Reason.SECRET_NOT_ALLOWED,
                f"spec.qdrant.apiKeySecretRef: {where} does not carry the label "
                f"{self.policy.label_selector} that the operator requires of Secrets it may "
                "read; label it (if it is meant for Qdrant) or name another Secret",
            )
        raw = kube.secret_value(entry.get("data"), key)
        if raw is None:
            raise ConnectionUnavailable(f"{where} has no key {key!r}")
        try:
            api_key = api_key_from_secret(raw)
        except InvalidKey as exc:
            SCRUBBER.remember(raw)
            raise ConnectionRefused(
                Reason.SECRET_INVALID,
                f"spec.qdrant.apiKeySecretRef.key: key {key!r} of {where} cannot be an API "
                f"key: {exc}",
            ) from None
        SCRUBBER.remember(api_key)
        return api_key


def checked_url(raw: str, policy: Policy) -> str:
    """`spec.qdrant.url` parsed strictly and checked against the allowlist: the URL to
    connect to, rebuilt from the parsed parts. Raises ConnectionRefused."""
    try:
        url = parse_url(raw)
    except InvalidUrl as exc:
        raise ConnectionRefused(Reason.INVALID_CONNECTION, f"spec.qdrant.url: {exc}") from None
    if not policy.url_allowed(url):
        raise ConnectionRefused(
            Reason.QDRANT_URL_NOT_ALLOWED,
            f"spec.qdrant.url: {url.origin} is not on the operator's allowlist of Qdrant "
            f"servers ({ALLOWED_URLS_ENV}, set by the platform admin); remove spec.qdrant "
            "to use the operator's Qdrant",
        )
    return url.url


def namespace_target(
    resource: NamespaceResource,
    read_secret: SecretReader,
    env: Mapping[str, str] = os.environ,
    policy: Policy | None = None,
) -> Target:
    """How this Namespace reaches Qdrant: its own url/Secret, or the operator's default.

    The URL is checked before the Secret is read: a Secret is never read for a URL the
    admin did not allow.
    """
    policy = policy if policy is not None else Policy.from_env(env)
    conn = resource.spec.qdrant
    if conn is None or (conn.url is None and conn.api_key_secret_ref is None):
        return operator_target(env)
    if conn.url is not None:
        url: str | None = checked_url(conn.url, policy)
    else:
        url = env.get("QDRANT_URL") or None
    if url is None:
        raise ConnectionRefused(
            Reason.INVALID_CONNECTION,
            "spec.qdrant.apiKeySecretRef is set but neither spec.qdrant.url nor "
            "QDRANT_URL is: an API key needs a Qdrant server",
        )
    api_key = None
    if conn.api_key_secret_ref is not None:
        ref = conn.api_key_secret_ref
        api_key = read_secret(resource.kube_namespace, ref.name, ref.key)
    return Target(url=url, api_key=api_key)


def connection_id(resource: NamespaceResource, env: Mapping[str, str] = os.environ) -> str:
    """What an operation records as its connection: the URL, or `embedded`."""
    conn = resource.spec.qdrant
    raw = (conn.url if conn is not None else None) or env.get("QDRANT_URL") or None
    if raw is None:
        return EMBEDDED
    try:
        return parse_url(raw).url
    except InvalidUrl:
        return raw


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


def open_target(target: Target, user: Hashable | None = None) -> ClientGateway:
    """The shared gateway for `target`; a client that cannot be built is a status. The
    pool knows `user` (a Namespace): a rotated key closes the client of the old one."""
    try:
        return connect_to(target, user=user)
    except GatewayError:
        raise
    except Exception as exc:  # any failure to build a client is the connection's fault
        detail = SCRUBBER.scrub(" ".join(str(exc).split()))[:200] or type(exc).__name__
        raise ConnectionRefused(
            Reason.INVALID_CONNECTION, f"spec.qdrant: cannot set up the client: {detail}"
        ) from None


def connector_for(
    resource: NamespaceResource,
    secrets: LabelledSecrets | None = None,
    env: Mapping[str, str] = os.environ,
) -> Connector:
    """The Namespace's connection, built when the pass first needs it."""
    policy = secrets.policy if secrets is not None else Policy.from_env(env)
    reader = secrets.read if secrets is not None else LabelledSecrets({}, policy).read

    user = (resource.kube_namespace, resource.metadata.name)

    def connect() -> ClientGateway:
        return open_target(namespace_target(resource, reader, env, policy), user)

    return connect


def connectors(
    labelled: Mapping[tuple[str, str], Iterable[Mapping[str, Any]]], policy: Policy
) -> Callable[[NamespaceResource], Connector]:
    """How a pass (or the finaliser) connects: with the Secrets of the operator's
    label-selected watch (kopf's index, snapshotted now) and the admin's policy."""
    secrets = {key: value for key, values in labelled.items() for value in values}
    store = LabelledSecrets(secrets, policy)
    return lambda resource: connector_for(resource, store)


def metered(
    resource: NamespaceResource,
    connect: Connector,
    recorder: Recorder,
    env: Mapping[str, str] = os.environ,
) -> Connector:
    """`connect`, with each Qdrant call recorded under the server's origin."""
    conn = resource.spec.qdrant
    server = server_label((conn.url if conn is not None else None) or env.get("QDRANT_URL"))
    return lambda: MeteredGateway(connect(), server, recorder)


def default_from_env() -> ClientGateway:
    """The shared gateway of the operator's default connection."""
    return connect_to(operator_target())
