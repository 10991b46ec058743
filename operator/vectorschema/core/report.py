"""The seed's reconfigure response (`status.lastReconfigure`), read off a plan's actions.

Prepared before the plan runs (it needs the points count from before the change), so a
crash mid-way can still report what the whole plan did. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vectorschema.api import IngestionCollection, LastReconfigure, NamespaceSpec
from vectorschema.core.actions import (
    AddVector,
    AtRisk,
    CreateCollection,
    Plan,
    RecreateCollection,
    RemoveVector,
    ReplaceVector,
    UpdateVector,
)
from vectorschema.core.schema import DesiredSchema, ObservedCollection

NO_CHANGES_MESSAGE = "Qdrant collection already matches the deployed plugins. No changes needed."


def collections_fed_by(collections: Sequence[IngestionCollection], plugins: set[str]) -> list[str]:
    return [c.id for c in collections if plugins.intersection(c.plugins)]


def report(
    plan: Plan,
    desired: DesiredSchema,
    observed: ObservedCollection | None,
    spec: NamespaceSpec,
    *,
    time: str,
) -> LastReconfigure:
    """The seed's reconfigure response for `plan`, prepared before it runs."""
    previous = observed.points_count if observed is not None else 0
    all_ids = [c.id for c in spec.collections]
    if plan.empty:
        return LastReconfigure(
            status="no_changes_needed",
            previous_points_count=previous,
            vectors_added=[],
            vectors_total=desired.names,
            collections_to_reprocess=[],
            message=NO_CHANGES_MESSAGE,
            strategy=spec.strategy,
            plan_fingerprint=plan.fingerprint,
            time=time,
        )
    added = plan.names(AddVector)
    removed = plan.names(RemoveVector)
    replaced = plan.names(ReplaceVector)
    for action in plan.actions:
        if isinstance(action, CreateCollection):
            added = [v.name for v in action.vectors]
        elif isinstance(action, RecreateCollection):
            added, removed, replaced = (
                list(action.added),
                list(action.removed),
                list(action.replaced),
            )
    wipes_all = plan.recreates or plan.creates
    if wipes_all:
        points_deleted = previous
        reprocess = all_ids
    else:
        points_deleted = 0
        refill = set(added) | set(replaced)
        feeding = {p for name in refill for p in desired.origins.get(name, ())}
        reprocess = collections_fed_by(spec.collections, feeding)
    message = _message(
        added=added,
        removed=removed,
        replaced=replaced,
        points_deleted=points_deleted,
        recreated=plan.recreates,
        created=observed is None,
        reprocess=reprocess,
        retuned=plan.names(UpdateVector),
    )
    return LastReconfigure(
        status="reconfigured",
        previous_points_count=previous,
        vectors_added=added,
        vectors_total=desired.names,
        collections_to_reprocess=reprocess,
        message=message,
        vectors_removed=removed,
        vectors_replaced=replaced,
        points_deleted=points_deleted,
        strategy=spec.strategy,
        plan_fingerprint=plan.fingerprint,
        time=time,
    )


def _message(
    *,
    added: list[str],
    removed: list[str],
    replaced: list[str],
    points_deleted: int,
    recreated: bool,
    created: bool,
    reprocess: list[str],
    retuned: list[str],
) -> str:
    if created:
        head = f"Qdrant collection created with {len(added)} vector(s)."
    elif recreated:
        head = f"Qdrant collection reconfigured with {len(added)} new vector(s)."
    else:
        head = f"Qdrant collection changed in place: {len(added)} new vector(s)."
    parts = [head]
    if removed:
        parts.append(f"Removed vector(s): {', '.join(removed)}.")
    if replaced:
        parts.append(f"Re-created vector(s) with a new definition: {', '.join(replaced)}.")
    if retuned:
        parts.append(f"Tuned vector(s): {', '.join(retuned)}.")
    if recreated:
        parts.append(f"{points_deleted} points were deleted.")
    elif not created and (removed or replaced):
        parts.append("No points were deleted; only the data of those vectors is gone.")
    elif not created:
        parts.append("No points were deleted.")
    if reprocess:
        verb = "re-ingest data with the new vectors" if recreated else "fill the new vectors"
        parts.append(f"Re-trigger batches on the listed collections to {verb}.")
    return " ".join(parts)


#: `(collection, vector, exact)` -> the points carrying that vector (the gateway's count).
VectorCounter = Callable[[str, str, bool], int]


def points_at_risk(
    plan: Plan,
    observed: ObservedCollection | None,
    count: VectorCounter,
    too_slow: tuple[type[BaseException], ...] = (),
) -> AtRisk:
    """Points whose data the plan deletes: all for a recreate, else those carrying the
    removed or re-created vectors (the largest count among them; one count per vector).

    Exact first; a count that raises one of `too_slow` (it timed out) switches every vector
    to Qdrant's estimate, and the result says it is one.
    """
    if observed is None:
        return AtRisk(0)
    if plan.recreates:
        return AtRisk(observed.points_count)
    vectors = plan.vectors_at_risk
    try:
        return AtRisk(max((count(plan.collection, v, True) for v in vectors), default=0))
    except too_slow:
        estimate = max((count(plan.collection, v, False) for v in vectors), default=0)
        return AtRisk(estimate, exact=False)
