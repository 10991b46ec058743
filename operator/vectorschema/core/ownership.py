"""Ownership: which collection a Namespace may change, and the stamps that say so.

The operator stamps the Qdrant collection's metadata with the owning resource; it never
changes a collection stamped by another, and adopts an unstamped one only when asked. The
operator and the CLI ask the same question here. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from vectorschema.api import (
    OWNER_METADATA_KEY,
    OWNER_UID_METADATA_KEY,
    NamespaceResource,
    Reason,
)
from vectorschema.core.schema import ObservedCollection


def owner_metadata(resource: NamespaceResource) -> dict[str, str]:
    """The stamps that make `resource` the collection's owner."""
    return {
        OWNER_METADATA_KEY: resource.owner_id,
        OWNER_UID_METADATA_KEY: resource.metadata.uid or "",
    }


#: The metadata update that removes the owner stamps (None deletes a key).
RELEASE_METADATA: dict[str, None] = {OWNER_METADATA_KEY: None, OWNER_UID_METADATA_KEY: None}


def owns(resource: NamespaceResource, observed: ObservedCollection) -> bool:
    """Whether the collection carries `resource`'s owner stamp."""
    return bool(observed.metadata.get(OWNER_METADATA_KEY) == resource.owner_id)


def is_stamped(observed: ObservedCollection) -> bool:
    """Whether any resource's owner stamp is on the collection."""
    return OWNER_METADATA_KEY in observed.metadata


@dataclass(frozen=True)
class Refusal:
    """Why the operator will not touch a collection (a Stalled reason and its message)."""

    reason: Reason
    field: str
    message: str


def ownership_refusal(
    resource: NamespaceResource, observed: ObservedCollection | None
) -> Refusal | None:
    """A collection owned by another resource, or nobody's without `spec.adopt`: refused."""
    if observed is None:
        return None
    owner = observed.metadata.get(OWNER_METADATA_KEY)
    if owner and owner != resource.owner_id:
        return Refusal(
            Reason.COLLECTION_OWNED_ELSEWHERE,
            "spec.collectionName",
            f"Qdrant collection {observed.name!r} is owned by {owner!r}; set "
            "spec.collectionName to another collection",
        )
    if not owner and not resource.spec.adopt:
        return Refusal(
            Reason.ADOPTION_REQUIRED,
            "spec.adopt",
            f"Qdrant collection {observed.name!r} exists and no resource owns it; set "
            "spec.adopt: true to manage it",
        )
    return None
