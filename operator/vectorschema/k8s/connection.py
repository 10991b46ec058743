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
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from vectorschema.api import NamespaceResource, Reason
from vectorschema.controller.errors import ConnectionRefused, ConnectorError
from vectorschema.controller.metering import MeteredGateway, Recorder, server_label
from vectorschema.controller.reconcile import Connector
from vectorschema.core.caps import MAX_API_KEY_BYTES_ENV, Caps
from vectorschema.core.policy import (
    ALLOWED_URLS_ENV,
    MAX_API_KEY_BYTES,
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


#: (kubernetes namespace, Secret name) -> {"labels": ..., "data": ...} of that Secret if
#: it carries the admin's label (None: no such labelled Secret). Read when needed.
SecretFetch = Callable[[str, str], Mapping[str, Any] | None]


class SecretCache:
    """The API keys read so far, by (namespace, Secret, key): only keys that a Namespace
    references are ever read, each at most the admin's cap, and at most `max_entries` of
    them (least recently used dropped first). A change of the Secret (its watch event,
    `invalidate`) drops its entries; a read that raced with a change is not kept.

    Nothing else of a Secret stays in memory: not its other keys, not unreferenced
    Secrets (the operator's label-selected watch only wakes the Namespaces that use one).
    """

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._lock = threading.Lock()
        #: an API key, or the refusal it got (a huge or invalid key is not fetched and
        #: parsed again on every pass: only when its Secret changes)
        self._keys: OrderedDict[tuple[str, str, str], str | ConnectionRefused] = OrderedDict()
        self._changes: dict[tuple[str, str], int] = {}
        self._changed = 0  # a counter of invalidations
        self._reading = 0  # reads in flight

    def get(self, namespace: str, name: str, key: str) -> str | ConnectionRefused | None:
        with self._lock:
            value = self._keys.get((namespace, name, key))
            if value is not None:
                self._keys.move_to_end((namespace, name, key))
            return value

    def stamp(self) -> int:
        """Taken before a read (then `put` or `abandon`): `put` keeps the value only if
        the Secret did not change since."""
        with self._lock:
            self._reading += 1
            return self._changed

    def put(
        self, namespace: str, name: str, key: str, value: str | ConnectionRefused, stamp: int
    ) -> None:
        with self._lock:
            changed = self._changes.get((namespace, name), -1) > stamp
            self._done()
            if changed:
                return  # the Secret changed while it was read
            self._keys[(namespace, name, key)] = value
            self._keys.move_to_end((namespace, name, key))
            while len(self._keys) > self.max_entries:
                self._keys.popitem(last=False)

    def abandon(self) -> None:
        """A read that failed (nothing to keep)."""
        with self._lock:
            self._done()

    def _done(self) -> None:
        self._reading -= 1
        if self._reading == 0:
            self._changes.clear()  # changes matter only to reads in flight

    def invalidate(self, namespace: str, name: str) -> None:
        with self._lock:
            self._changed += 1
            if self._reading:
                self._changes[(namespace, name)] = self._changed
            for k in [k for k in self._keys if k[:2] == (namespace, name)]:
                del self._keys[k]

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {"secret_keys": len(self._keys), "secret_changes": len(self._changes)}


@dataclass(frozen=True)
class LabelledSecrets:
    """The Secrets the operator may read: those carrying the admin's label, read one key
    at a time when a Namespace's connection needs it (`fetch`: a label- and
    field-selected list; or a mapping, in tests). A Secret not among them is looked up by
    metadata only, to tell "missing" from "not labelled"."""

    secrets: Mapping[tuple[str, str], Mapping[str, Any]] | SecretFetch
    policy: Policy
    exists: Callable[[str, str], bool] = kube.secret_exists
    cache: SecretCache | None = None
    max_key_bytes: int = MAX_API_KEY_BYTES

    def _fetch(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        if callable(self.secrets):
            return self.secrets(namespace, name)
        return self.secrets.get((namespace, name))

    def read(self, namespace: str, name: str, key: str) -> str:
        if self.cache is not None:
            cached = self.cache.get(namespace, name, key)
            if isinstance(cached, ConnectionRefused):
                raise ConnectionRefused(cached.reason, str(cached))
            if cached is not None:
                SCRUBBER.remember(cached, tenant=namespace)  # again, if evicted
                return cached
            stamp = self.cache.stamp()
            try:
                api_key = self._read(namespace, name, key)
            except ConnectionRefused as refused:
                # a labelled Secret's refusal holds until its watch event says it changed
                # (labelling an unlabelled one is such an event)
                self.cache.put(namespace, name, key, refused, stamp)
                raise
            except BaseException:
                self.cache.abandon()
                raise
            self.cache.put(namespace, name, key, api_key, stamp)
            return api_key
        return self._read(namespace, name, key)

    def _read(self, namespace: str, name: str, key: str) -> str:
        where = f"Secret {namespace}/{name}"
        entry = self._fetch(namespace, name)
        if entry is None or not self.policy.secret_allowed(entry.get("labels")):
            if entry is None and not self.exists(namespace, name):
                raise ConnectionUnavailable(f"{where} not found")
            raise ConnectionRefused(
                Reason.SECRET_NOT_ALLOWED,
                f"spec.qdrant.apiKeySecretRef: {where} does not carry the label "
                f"{self.policy.label_selector} that the operator requires of Secrets it may "
                "read; label it (if it is meant for Qdrant) or name another Secret",
            )
        encoded = (entry.get("data") or {}).get(key)
        if isinstance(encoded, str) and len(encoded) > _b64_len(self.max_key_bytes) + 8:
            # refused before decoding, never remembered, never sent
            raise ConnectionRefused(
                Reason.SECRET_INVALID,
                f"spec.qdrant.apiKeySecretRef.key: key {key!r} of {where} cannot be an API "
                f"key: it holds about {len(encoded) * 3 // 4} bytes; an API key may have at "
                f"most {self.max_key_bytes} (the platform admin's limit, "
                f"{MAX_API_KEY_BYTES_ENV})",
            )
        raw = kube.secret_value(entry.get("data"), key)
        if raw is None:
            raise ConnectionUnavailable(f"{where} has no key {key!r}")
        try:
            api_key = api_key_from_secret(raw, self.max_key_bytes)
        except InvalidKey as exc:
            if len(raw) <= self.max_key_bytes:
                SCRUBBER.remember(raw, tenant=namespace)
            raise ConnectionRefused(
                Reason.SECRET_INVALID,
                f"spec.qdrant.apiKeySecretRef.key: key {key!r} of {where} cannot be an API "
                f"key: {exc}",
            ) from None
        SCRUBBER.remember(api_key, tenant=namespace)
        return api_key


def _b64_len(n: int) -> int:
    return (n + 2) // 3 * 4


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
    policy: Policy,
    cache: SecretCache | None = None,
    caps: Caps | None = None,
    fetch: SecretFetch | None = None,
) -> Callable[[NamespaceResource], Connector]:
    """How a pass (or the finaliser) connects: reading the one key its
    `apiKeySecretRef` names (from `cache`, else from the API server: a list selected by
    the admin's label and the Secret's name), within the admin's policy and caps."""
    caps = caps if caps is not None else Caps()
    read = fetch if fetch is not None else _labelled_fetch(policy)
    store = LabelledSecrets(read, policy, cache=cache, max_key_bytes=caps.api_key_bytes)
    return lambda resource: connector_for(resource, store)


def _labelled_fetch(policy: Policy) -> SecretFetch:
    def fetch(namespace: str, name: str) -> Mapping[str, Any] | None:
        return kube.read_labelled_secret(namespace, name, policy.label_selector)

    return fetch


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
