"""Reconcile one Namespace: resolve plugins, observe, plan, approve, execute, report.

This is the whole control loop for one resource, free of kopf: the handlers call
`reconcile()` with the resource, the known Plugins and a way to reach Qdrant, and get
back the new status, the Events to post and whether the one-shot approval annotation
must be removed. The handlers write the status once; the only other write is the intent
record (`status.operation`) that `reconcile()` asks for through `write_intent` before a
destructive step, so a crash in the middle resumes and finishes on restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from vectorschema import reasons
from vectorschema.executor import execute
from vectorschema.gateway import (
    CollectionNotFound,
    GatewayError,
    QdrantGateway,
    QdrantUnavailable,
)
from vectorschema.models import (
    CONFIRM_ANNOTATION,
    OWNER_METADATA_KEY,
    OWNER_UID_METADATA_KEY,
    DeletionPolicy,
    NamespaceResource,
    NamespaceStatus,
    Operation,
    PluginSpec,
    timestamp,
)
from vectorschema.planning import (
    ApprovedBy,
    Plan,
    PluginConflict,
    PluginNotFound,
    approval,
    make_plan,
    needs_approval,
    report,
    resolve_desired,
)
from vectorschema.schema import ObservedCollection

log = logging.getLogger(__name__)

#: Retry delay after a transient failure (Qdrant down, Secret missing), in seconds.
RETRY_DELAY = 10.0


class ConnectionUnavailable(Exception):
    """The namespace's Qdrant connection cannot be built (e.g. its Secret is missing)."""


Connector = Callable[[], QdrantGateway]
IntentWriter = Callable[[NamespaceStatus], None]


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Result:
    status: NamespaceStatus
    events: list[Event] = field(default_factory=list)
    remove_annotation: bool = False
    retry_after: float | None = None


def invalid_spec(
    old: NamespaceStatus, message: str, generation: int | None, now: datetime
) -> Result:
    """The spec does not parse: say which field, touch nothing."""
    status = old.model_copy(deep=True)
    status.plan = None
    status.set_stalled(reasons.INVALID_SPEC, message, generation=generation, now=now)
    return Result(status=status)


def owner_metadata(resource: NamespaceResource) -> dict[str, str]:
    return {
        OWNER_METADATA_KEY: resource.owner_id,
        OWNER_UID_METADATA_KEY: resource.metadata.uid or "",
    }


def reconcile(
    resource: NamespaceResource,
    plugins: Mapping[str, PluginSpec],
    connect: Connector,
    *,
    now: datetime,
    write_intent: IntentWriter,
) -> Result:
    """One pass of the control loop for `resource`. Never raises for expected failures."""
    old = resource.status or NamespaceStatus()
    status = old.model_copy(deep=True)
    result = Result(status=status)
    gen = resource.metadata.generation
    spec = resource.spec
    collection = resource.collection_name
    if status.collection != collection:  # a new collection: the old baseline means nothing
        status.set_live(None, None)
    status.collection = collection

    try:
        desired = resolve_desired(spec, plugins)
    except (PluginNotFound, PluginConflict) as exc:
        reason = (
            reasons.PLUGIN_NOT_FOUND if isinstance(exc, PluginNotFound) else reasons.PLUGIN_CONFLICT
        )
        status.plan = None
        status.set_stalled(reason, str(exc), generation=gen, now=now)
        return result

    try:
        gateway = connect()
        capabilities = gateway.capabilities()
        observed = gateway.observe(collection)
    except ConnectionUnavailable as exc:
        status.set_reconciling(reasons.SECRET_NOT_FOUND, str(exc), generation=gen, now=now)
        result.retry_after = RETRY_DELAY
        return result
    except QdrantUnavailable as exc:
        status.set_reconciling(reasons.QDRANT_UNAVAILABLE, str(exc), generation=gen, now=now)
        result.retry_after = RETRY_DELAY
        return result
    except GatewayError as exc:
        status.set_stalled(reasons.QDRANT_REJECTED, str(exc), generation=gen, now=now)
        result.retry_after = RETRY_DELAY * 6
        return result

    operation = old.operation
    refusal = ownership_refusal(resource, observed) if operation is None else None
    if refusal is not None:
        status.plan = None
        status.set_stalled(refusal.reason, refusal.message, generation=gen, now=now)
        return result

    plan = make_plan(
        collection,
        desired,
        observed,
        strategy=spec.strategy,
        capabilities=capabilities,
        last_applied=status.vectors if operation is None else None,
    )
    annotation = resource.metadata.annotations.get(CONFIRM_ANNOTATION)

    try:
        if operation is not None:
            resumed = _resume(resource, plan, operation, gateway, status, result, now)
            if resumed:
                return _finish(
                    resource, gateway, status, result, observed, now, order=desired.names
                )
        if plan.empty:
            _stamp_adopted(resource, observed, gateway)
            if status.last_reconfigure is None:
                status.last_reconfigure = report(plan, desired, observed, spec, time=timestamp(now))
            return _finish(
                resource, gateway, status, result, observed, now, order=desired.names, touched=False
            )

        verdict = approval(plan, spec, annotation)
        if not verdict.approved:
            detail = verdict.message
            if annotation is not None and annotation != plan.fingerprint:
                detail = (
                    f"annotation {CONFIRM_ANNOTATION}={annotation} does not match the pending "
                    f"plan {plan.fingerprint}"
                )
            _await_confirmation(plan, observed, gateway, status, result, detail, desired.names)
            status.set_awaiting_confirmation(
                status_message(plan, status, detail), generation=gen, now=now
            )
            return result

        outcome = report(plan, desired, observed, spec, time=timestamp(now))
        if needs_approval(plan, spec.strategy):
            status.operation = Operation(
                plan_fingerprint=plan.fingerprint,
                started=timestamp(now),
                actions=[a.to_status() for a in plan.actions],
                result=outcome,
            )
            status.set_reconciling(
                reasons.APPLYING,
                f"applying plan {plan.fingerprint} ({verdict.message})",
                generation=gen,
                now=now,
            )
            write_intent(status)
        if not plan.recreates:  # a recreate stamps the new collection itself
            _stamp_adopted(resource, observed, gateway)
        execute(plan, gateway, owner_metadata(resource))
        status.operation = None
        status.last_reconfigure = outcome
        result.remove_annotation = verdict.by is ApprovedBy.ANNOTATION
        result.events.append(
            Event(
                "Normal",
                reasons.EVENT_COLLECTION_CREATED
                if observed is None
                else reasons.EVENT_RECONFIGURED,
                outcome.message,
            )
        )
        return _finish(resource, gateway, status, result, None, now, order=desired.names)
    except QdrantUnavailable as exc:
        status.set_reconciling(reasons.QDRANT_UNAVAILABLE, str(exc), generation=gen, now=now)
        result.retry_after = RETRY_DELAY
        return result
    except CollectionNotFound as exc:  # deleted under our feet: observe and plan again
        status.set_reconciling(reasons.PROGRESSING, str(exc), generation=gen, now=now)
        result.retry_after = 1.0
        return result
    except GatewayError as exc:
        status.set_stalled(reasons.APPLY_FAILED, str(exc), generation=gen, now=now)
        result.events.append(Event("Warning", reasons.APPLY_FAILED, str(exc)))
        result.retry_after = RETRY_DELAY * 6
        return result


@dataclass(frozen=True)
class Refusal:
    """Why the operator will not touch a collection (a Stalled reason and its message)."""

    reason: str
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
            reasons.COLLECTION_OWNED_ELSEWHERE,
            "spec.collectionName",
            f"Qdrant collection {observed.name!r} is owned by {owner!r}; set "
            "spec.collectionName to another collection",
        )
    if not owner and not resource.spec.adopt:
        return Refusal(
            reasons.ADOPTION_REQUIRED,
            "spec.adopt",
            f"Qdrant collection {observed.name!r} exists and no resource owns it; set "
            "spec.adopt: true to manage it",
        )
    return None


def points_at_risk(plan: Plan, observed: ObservedCollection | None, gateway: QdrantGateway) -> int:
    """Points whose data the plan deletes: all for a recreate, else those carrying the
    removed or re-created vectors (the largest count among them; one count per vector)."""
    if observed is None:
        return 0
    if plan.recreates:
        return observed.points_count
    counts = [gateway.count_with_vector(plan.collection, v) for v in plan.vectors_at_risk]
    return max(counts, default=0)


def _stamp_adopted(
    resource: NamespaceResource, observed: ObservedCollection | None, gateway: QdrantGateway
) -> None:
    """Stamp ownership on an adopted collection (one nobody owned), before changing it."""
    if observed is not None and OWNER_METADATA_KEY not in observed.metadata:
        gateway.set_metadata(observed.name, owner_metadata(resource))


def _resume(
    resource: NamespaceResource,
    plan: Plan,
    operation: Operation,
    gateway: QdrantGateway,
    status: NamespaceStatus,
    result: Result,
    now: datetime,
) -> bool:
    """Finish an operation a crash interrupted. False when the world moved on."""
    if (
        not plan.empty
        and plan.fingerprint != operation.plan_fingerprint
        and needs_approval(plan, resource.spec.strategy)
    ):
        # Something else changed since the intent was recorded: plan afresh.
        status.operation = None
        return False
    if not plan.empty:
        execute(plan, gateway, owner_metadata(resource))
    status.operation = None
    status.last_reconfigure = operation.result
    result.events.append(
        Event(
            "Normal",
            reasons.EVENT_RESUMED,
            f"finished plan {operation.plan_fingerprint} interrupted at "
            f"{operation.started}: {operation.result.message}",
        )
    )
    annotation = resource.metadata.annotations.get(CONFIRM_ANNOTATION)
    result.remove_annotation = annotation == operation.plan_fingerprint
    return True


def _await_confirmation(
    plan: Plan,
    observed: ObservedCollection | None,
    gateway: QdrantGateway,
    status: NamespaceStatus,
    result: Result,
    detail: str,
    order: Sequence[str],
) -> None:
    """Put the pending plan in status (with what it puts at risk); tell once per plan."""
    at_risk = points_at_risk(plan, observed, gateway)
    changed = status.plan is None or status.plan.fingerprint != plan.fingerprint
    status.plan = plan.to_status(at_risk)
    if observed is not None:
        # status.vectors is also the baseline that tells a change by hand: keep it on drift
        vectors = status.vectors if plan.drift else _ordered(observed.names, order)
        status.set_live(observed.points_count, vectors)
    if changed:
        result.events.append(
            Event("Warning", reasons.EVENT_PLAN_PENDING, status_message(plan, status, detail))
        )


def status_message(plan: Plan, status: NamespaceStatus, detail: str) -> str:
    """What a person reads in `kubectl describe`: what waits, why, and how to approve it."""
    at_risk = status.plan.points_at_risk if status.plan is not None else 0
    what = plan.reason or "the plan changes the collection"
    message = (
        f"plan {plan.fingerprint} needs confirmation: {what}; {at_risk} point(s) at risk. "
        f"Approve with spec.confirmPlan: {plan.fingerprint}, or annotate "
        f"{CONFIRM_ANNOTATION}={plan.fingerprint}"
    )
    return f"{message} ({detail})" if detail else message


def _ordered(names: Sequence[str], order: Sequence[str]) -> list[str]:
    """Live vector names in the plugins' order (the order users wrote), others after."""
    rank = {n: i for i, n in enumerate(order)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def _finish(
    resource: NamespaceResource,
    gateway: QdrantGateway,
    status: NamespaceStatus,
    result: Result,
    observed: ObservedCollection | None,
    now: datetime,
    *,
    order: Sequence[str],
    touched: bool = True,
) -> Result:
    """Status after a successful pass; re-observes only when Qdrant was written."""
    live = (
        observed
        if not touched and observed is not None
        else gateway.observe(resource.collection_name)
    )
    status.plan = None
    if live is not None:
        status.set_live(live.points_count, _ordered(live.names, order))
    status.set_ready(
        f"collection {resource.collection_name} has {len(status.vectors or [])} vector(s)",
        generation=resource.metadata.generation,
        now=now,
    )
    return result


@dataclass(frozen=True)
class Finalized:
    """What deleting a Namespace did to its collection."""

    event: Event


def finalize(resource: NamespaceResource, connect: Connector) -> Finalized:
    """Release the collection: drop it (Delete) or remove our ownership stamp (Retain).

    A collection owned by another resource, or not there at all, is left alone. Raises
    ConnectionUnavailable / GatewayError for the caller's bounded retry.
    """
    collection = resource.collection_name
    gateway = connect()
    observed = gateway.observe(collection)
    if observed is None:
        return Finalized(
            Event("Normal", reasons.EVENT_RETAINED, f"collection {collection} is gone")
        )
    owner = observed.metadata.get(OWNER_METADATA_KEY)
    if owner != resource.owner_id:
        return Finalized(
            Event(
                "Normal",
                reasons.EVENT_RETAINED,
                f"collection {collection} is not owned by {resource.owner_id}; left alone",
            )
        )
    if resource.spec.deletion_policy is DeletionPolicy.DELETE:
        gateway.delete_collection(collection)
        return Finalized(
            Event(
                "Normal",
                reasons.EVENT_DELETED,
                f"deleted collection {collection} ({observed.points_count} points)",
            )
        )
    gateway.set_metadata(collection, {OWNER_METADATA_KEY: None, OWNER_UID_METADATA_KEY: None})
    return Finalized(
        Event(
            "Normal",
            reasons.EVENT_RETAINED,
            f"retained collection {collection} ({observed.points_count} points); "
            "ownership released",
        )
    )
