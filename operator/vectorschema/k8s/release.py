"""Releasing a Namespace's collection on deletion, without ever holding the resource
forever: Qdrant unreachable or the Secret gone is retried a bounded number of times, a
connection that can never work (refused by the admin's policy, invalid) is not retried,
an unexpected error is retried like an outage, and then the resource goes with a Warning
Event saying what may be left behind.

The release holds the resource's lock (`controller.locks`): it waits for a pass still in
flight (a cancelled daemon does not stop its thread), and once it is done, no pass of the
resource writes anything."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from vectorschema.api import EventReason, NamespaceResource, describe
from vectorschema.controller.errors import ConnectionRefused, ConnectorError
from vectorschema.controller.finalize import Finalized, finalize
from vectorschema.controller.locks import ResourceLocks
from vectorschema.controller.reconcile import Connector
from vectorschema.controller.results import Event
from vectorschema.core.policy import SCRUBBER, Policy
from vectorschema.qdrant.errors import GatewayError

log = logging.getLogger("vectorschema")

#: How long the release waits for a pass in flight before it retries (seconds).
LOCK_WAIT = 120.0


def release(
    body: Mapping[str, Any],
    retry: int,
    *,
    retries: int,
    delay: float,
    connector_for: Callable[[NamespaceResource], Connector],
    release_collection: Callable[[NamespaceResource, Connector], Finalized] = finalize,
    locks: ResourceLocks | None = None,
    lock_wait: float = LOCK_WAIT,
    policy: Policy | None = None,
) -> Event:
    """The Event to post once released; raises `kopf.TemporaryError` to be retried.

    A `spec.collectionName` the admin's `policy` does not allow this Kubernetes namespace
    (default: the safe defaults) is left alone without connecting: no pass ever touched
    it, and an Event telling "gone" from "owned by another" would tell a tenant which of
    another namespace's collections exist."""
    meta = body.get("metadata", {})
    key = (str(meta.get("namespace")), str(meta.get("name")))
    rules = policy if policy is not None else Policy()
    if locks is None:
        return _release(body, retry, retries, delay, connector_for, release_collection, rules)
    args = (body, retry, retries, delay, connector_for, release_collection, rules)
    with locks.hold(key, timeout=0) as free:
        if free:
            return _released(locks, meta, *args)
    log.info("%s/%s: deletion waits for the pass in flight", *key)
    with locks.hold(key, timeout=lock_wait) as held:
        if held:
            return _released(locks, meta, *args)
    if retry + 1 < retries:
        raise kopf.TemporaryError("a reconcile pass is still in flight", delay=delay)
    return Event(
        "Warning",
        EventReason.RELEASED_UNCLEAN,
        f"released after {retry + 1} attempts while a reconcile pass was still in flight; "
        "the collection was not cleaned up",
    )


def _released(
    locks: ResourceLocks,
    meta: Mapping[str, Any],
    body: Mapping[str, Any],
    retry: int,
    retries: int,
    delay: float,
    connector_for: Callable[[NamespaceResource], Connector],
    release_collection: Callable[[NamespaceResource, Connector], Finalized],
    policy: Policy,
) -> Event:
    event = _release(body, retry, retries, delay, connector_for, release_collection, policy)
    locks.mark_released((str(meta.get("namespace")), str(meta.get("name"))), meta.get("uid"))
    return event


def _release(
    body: Mapping[str, Any],
    retry: int,
    retries: int,
    delay: float,
    connector_for: Callable[[NamespaceResource], Connector],
    release_collection: Callable[[NamespaceResource, Connector], Finalized],
    policy: Policy,
) -> Event:
    """`_release_once`, with every failure bounded: whatever it raises (but kopf's own
    retry) is retried `retries` times in all, and then the resource goes."""
    try:
        return _release_once(body, retry, retries, delay, connector_for, release_collection, policy)
    except kopf.TemporaryError:
        raise
    except Exception as exc:  # a deletion is never held for ever, whatever went wrong
        log.warning("releasing failed: %s", type(exc).__name__)
        message = SCRUBBER.scrub(str(exc)) or type(exc).__name__
        if retry + 1 < retries:
            raise kopf.TemporaryError(message, delay=delay) from None
        return Event(
            "Warning",
            EventReason.RELEASED_UNCLEAN,
            f"released after {retry + 1} attempts without cleaning up: {message}",
        )


def _release_once(
    body: Mapping[str, Any],
    retry: int,
    retries: int,
    delay: float,
    connector_for: Callable[[NamespaceResource], Connector],
    release_collection: Callable[[NamespaceResource, Connector], Finalized],
    policy: Policy,
) -> Event:
    try:
        resource = NamespaceResource.model_validate(
            {"metadata": dict(body.get("metadata", {})), "spec": dict(body.get("spec") or {})}
        )
    except ValidationError as exc:
        return Event(
            "Warning",
            EventReason.RELEASED_UNCLEAN,
            f"invalid spec, collection left as it is: {describe(exc)}",
        )
    refusal = policy.collection_refusal(
        resource.kube_namespace, resource.collection_name, resource.default_collection
    )
    if refusal is not None:
        return Event(
            "Warning",
            EventReason.RELEASED_UNCLEAN,
            f"released without looking at collection {resource.collection_name}: {refusal}",
        )
    try:
        done = release_collection(resource, connector_for(resource))
    except Exception as exc:  # anything else too: a deletion is never held for ever
        if not isinstance(exc, ConnectorError | GatewayError):
            log.warning("releasing %s failed: %s", resource.owner_id, type(exc).__name__)
        message = SCRUBBER.scrub(str(exc)) or type(exc).__name__
        if not isinstance(exc, ConnectionRefused) and retry + 1 < retries:
            raise kopf.TemporaryError(message, delay=delay) from None
        attempts = f"after {retry + 1} attempts " if not isinstance(exc, ConnectionRefused) else ""
        return Event(
            "Warning",
            EventReason.RELEASED_UNCLEAN,
            f"released {attempts}without cleaning up collection "
            f"{resource.collection_name} ({resource.spec.deletion_policy.value}): {message}",
        )
    return done.event
