"""Releasing a Namespace's collection when the resource is deleted.

`Delete` drops the collection, `Retain` replaces the owner stamps by the retained-by
stamps (so only this Kubernetes namespace may adopt it later); a collection not stamped as
this resource's (name and UID), or not there at all, is left alone. kopf-free: the kopf
layer retries a bounded number of times and then lets the resource go.
"""

from __future__ import annotations

from dataclasses import dataclass

from vectorschema.api import DeletionPolicy, EventReason, NamespaceResource
from vectorschema.controller.reconcile import Connector
from vectorschema.controller.results import Event
from vectorschema.core.ownership import owns, release_metadata


@dataclass(frozen=True)
class Finalized:
    """What deleting a Namespace did to its collection."""

    event: Event


def finalize(resource: NamespaceResource, connect: Connector) -> Finalized:
    """Release the collection: drop it (Delete) or remove our ownership stamp (Retain).

    A collection owned by another resource, or not there at all, is left alone. Raises
    the connector's and the gateway's errors for the caller's bounded retry.
    """
    collection = resource.collection_name
    gateway = connect()
    observed = gateway.observe(collection)
    if observed is None:
        return _normal(EventReason.RETAINED, f"collection {collection} is gone")
    if not owns(resource, observed):
        return _normal(
            EventReason.RETAINED,
            f"collection {collection} is not owned by {resource.owner_id}; left alone",
        )
    if resource.spec.deletion_policy is DeletionPolicy.DELETE:
        gateway.delete_collection(collection)
        return _normal(
            EventReason.DELETED,
            f"deleted collection {collection} ({observed.points_count} points)",
        )
    gateway.set_metadata(collection, release_metadata(resource))
    return _normal(
        EventReason.RETAINED,
        f"retained collection {collection} ({observed.points_count} points); ownership released",
    )


def _normal(reason: EventReason, message: str) -> Finalized:
    return Finalized(Event("Normal", reason, message))
