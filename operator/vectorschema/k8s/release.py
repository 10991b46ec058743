"""Releasing a Namespace's collection on deletion, without ever holding the resource
forever: Qdrant unreachable or the Secret gone is retried a bounded number of times, then
the resource goes with a Warning Event saying what may be left behind."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from vectorschema.api import EventReason, NamespaceResource, describe
from vectorschema.controller.errors import ConnectorError
from vectorschema.controller.finalize import Finalized, finalize
from vectorschema.controller.reconcile import Connector
from vectorschema.controller.results import Event
from vectorschema.qdrant.errors import GatewayError


def release(
    body: Mapping[str, Any],
    retry: int,
    *,
    retries: int,
    delay: float,
    connector_for: Callable[[NamespaceResource], Connector],
    release_collection: Callable[[NamespaceResource, Connector], Finalized] = finalize,
) -> Event:
    """The Event to post once released; raises `kopf.TemporaryError` to be retried."""
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
    try:
        done = release_collection(resource, connector_for(resource))
    except (ConnectorError, GatewayError) as exc:
        if retry + 1 < retries:
            raise kopf.TemporaryError(str(exc), delay=delay) from None
        return Event(
            "Warning",
            EventReason.RELEASED_UNCLEAN,
            f"released after {retry + 1} attempts without cleaning up collection "
            f"{resource.collection_name} ({resource.spec.deletion_policy.value}): {exc}",
        )
    return done.event
