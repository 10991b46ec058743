"""Ownership: which collection a Namespace may change, and the stamps that say so.

The operator stamps the Qdrant collection's metadata with the owning resource
(`vectorschema.dev/owner: <kubernetes namespace>/<name>` and its UID). It never changes a
collection stamped by another resource, and adopts one only when asked (`spec.adopt`):

- stamped by another resource: refused (`CollectionOwnedElsewhere`), adopt or not;
- stamped with this resource's name but another UID (an earlier resource of that name,
  whose release never ran): adopted only with `spec.adopt`;
- retained: when a resource goes with `deletionPolicy: Retain`, its owner stamps are
  replaced by `vectorschema.dev/retained-by` / `retained-uid`. Only a resource of the same
  Kubernetes namespace may adopt it (with `spec.adopt`); any other is refused
  (`CollectionRetainedElsewhere`), even with `spec.adopt`;
- stamped by nobody: adopted only with `spec.adopt`.

The operator and the CLI ask the same question here. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vectorschema.api import (
    LIVE_VECTORS_METADATA_KEY,
    OPERATION_METADATA_KEY,
    OWNER_METADATA_KEY,
    OWNER_UID_METADATA_KEY,
    RETAINED_BY_METADATA_KEY,
    RETAINED_UID_METADATA_KEY,
    NamespaceResource,
    Reason,
)
from vectorschema.core.schema import ObservedCollection, VectorDef


def owner_metadata(resource: NamespaceResource) -> dict[str, str]:
    """The stamps that make `resource` the collection's owner (for a new collection)."""
    return {
        OWNER_METADATA_KEY: resource.owner_id,
        OWNER_UID_METADATA_KEY: resource.metadata.uid or "",
    }


def adoption_metadata(resource: NamespaceResource) -> dict[str, Any]:
    """The metadata update that stamps an existing collection as `resource`'s (a None
    value deletes the key: a retained collection loses its retained-by stamps)."""
    return {
        **owner_metadata(resource),
        RETAINED_BY_METADATA_KEY: None,
        RETAINED_UID_METADATA_KEY: None,
    }


def release_metadata(resource: NamespaceResource) -> dict[str, Any]:
    """The metadata update of a Retain release: the owner stamps go, the retained-by
    stamps say whose namespace the collection stays with; an operation recorded by the
    resource goes with it."""
    return {
        OPERATION_METADATA_KEY: None,
        OWNER_METADATA_KEY: None,
        OWNER_UID_METADATA_KEY: None,
        RETAINED_BY_METADATA_KEY: resource.owner_id,
        RETAINED_UID_METADATA_KEY: resource.metadata.uid or "",
    }


def _uid_matches(resource: NamespaceResource, stamped: Any) -> bool:
    """A stamp without a UID (or a resource without one) matches by name alone."""
    return not stamped or not resource.metadata.uid or stamped == resource.metadata.uid


def owns(resource: NamespaceResource, observed: ObservedCollection) -> bool:
    """Whether the collection carries exactly `resource`'s owner stamps (name and UID)."""
    md = observed.metadata
    return md.get(OWNER_METADATA_KEY) == resource.owner_id and _uid_matches(
        resource, md.get(OWNER_UID_METADATA_KEY)
    )


def needs_stamp(resource: NamespaceResource, observed: ObservedCollection | None) -> bool:
    """Whether an existing collection must be (re)stamped before it is changed."""
    if observed is None:
        return False
    md = observed.metadata
    return (
        not owns(resource, observed)
        or md.get(OWNER_UID_METADATA_KEY) != (resource.metadata.uid or "")
        or RETAINED_BY_METADATA_KEY in md
        or RETAINED_UID_METADATA_KEY in md
    )


def _namespace_of(owner_id: str) -> str:
    return owner_id.partition("/")[0]


@dataclass(frozen=True)
class Refusal:
    """Why the operator will not touch a collection (a Stalled reason and its message)."""

    reason: Reason
    field: str
    message: str


def ownership_refusal(
    resource: NamespaceResource, observed: ObservedCollection | None
) -> Refusal | None:
    """Whether `resource` may change `observed` (see the module docstring); None: it may."""
    if observed is None:
        return None
    md = observed.metadata
    name = observed.name
    owner = md.get(OWNER_METADATA_KEY)
    if owner and owner != resource.owner_id:
        return Refusal(
            Reason.COLLECTION_OWNED_ELSEWHERE,
            "spec.collectionName",
            f"spec.collectionName: Qdrant collection {name!r} is owned by {owner!r}; set "
            "spec.collectionName to another collection",
        )
    if owner:
        if _uid_matches(resource, md.get(OWNER_UID_METADATA_KEY)) or resource.spec.adopt:
            return None
        return Refusal(
            Reason.ADOPTION_REQUIRED,
            "spec.adopt",
            f"spec.adopt: Qdrant collection {name!r} is stamped by an earlier resource named "
            f"{owner!r} (another UID); set spec.adopt: true to take it over",
        )
    retained = md.get(RETAINED_BY_METADATA_KEY)
    if retained:
        if _namespace_of(str(retained)) != resource.kube_namespace:
            return Refusal(
                Reason.COLLECTION_RETAINED_ELSEWHERE,
                "spec.collectionName",
                f"spec.collectionName: Qdrant collection {name!r} is retained by {retained!r} "
                "of another Kubernetes namespace; only that namespace may adopt it",
            )
        if resource.spec.adopt:
            return None
        return Refusal(
            Reason.ADOPTION_REQUIRED,
            "spec.adopt",
            f"spec.adopt: Qdrant collection {name!r} was retained by {retained!r}; set "
            "spec.adopt: true to manage it",
        )
    if not resource.spec.adopt:
        return Refusal(
            Reason.ADOPTION_REQUIRED,
            "spec.adopt",
            f"spec.adopt: Qdrant collection {name!r} exists and no resource owns it; set "
            "spec.adopt: true to manage it",
        )
    return None


def live_metadata(vectors: Iterable[VectorDef] | Iterable[str]) -> dict[str, list[str]]:
    """The metadata update that records `vectors` as what the operator left live."""
    return {LIVE_VECTORS_METADATA_KEY: sorted(v if isinstance(v, str) else v.name for v in vectors)}


@dataclass(frozen=True)
class Baseline:
    """What a plan compares the live collection with to tell a change made by hand.

    `names`: the vector names the operator last left live, from its own record on the
    collection (`vectorschema.dev/live-vectors`, where no tenant writes; never status,
    which a tenant with status rights can rewrite). None with `known` False: nothing to
    compare (no collection, or one being adopted: `spec.adopt` takes it as it is).
    `known` False on a collection this resource owns: it has no such record (made before
    the operator kept one), so any difference may be a change by hand.
    """

    names: tuple[str, ...] | None
    known: bool = True


def drift_baseline(resource: NamespaceResource, observed: ObservedCollection | None) -> Baseline:
    """The drift baseline of `observed` for `resource` (see `Baseline`)."""
    if observed is None or needs_stamp(resource, observed):
        return Baseline(None)
    raw = observed.metadata.get(LIVE_VECTORS_METADATA_KEY)
    if isinstance(raw, list) and all(isinstance(n, str) for n in raw):
        return Baseline(tuple(raw))
    return Baseline(None, known=False)
