"""Condition reasons and Event reasons: CamelCase constants, in one place.

Every reason a user can see in `kubectl get vns` / `kubectl describe vns` is here; the docs'
reference page (docs/reference/reasons.md) is generated from this module by `make docs-gen`,
so the docs and the code cannot drift apart. Imports nothing.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """The `reason` of a condition."""

    # Ready=True
    RECONCILED = "Reconciled"

    # Reconciling=True (work in progress, or a transient failure being retried)
    PROGRESSING = "Progressing"
    APPLYING = "Applying"
    QDRANT_UNAVAILABLE = "QdrantUnavailable"
    SECRET_NOT_FOUND = "SecretNotFound"

    # Ready=False, waiting for a person
    AWAITING_CONFIRMATION = "AwaitingConfirmation"

    # Stalled=True (nothing is touched until the spec or the world changes)
    PLUGIN_NOT_FOUND = "PluginNotFound"
    PLUGIN_CONFLICT = "PluginConflict"
    COLLECTION_OWNED_ELSEWHERE = "CollectionOwnedElsewhere"
    ADOPTION_REQUIRED = "AdoptionRequired"
    INVALID_SPEC = "InvalidSpec"
    APPLY_FAILED = "ApplyFailed"
    QDRANT_REJECTED = "QdrantRejected"
    # tenancy: refused by the admin's policy or the ownership rules (issue 8)
    QDRANT_URL_NOT_ALLOWED = "QdrantUrlNotAllowed"
    SECRET_NOT_ALLOWED = "SecretNotAllowed"
    SECRET_INVALID = "SecretInvalid"
    INVALID_CONNECTION = "InvalidConnection"
    COLLECTION_NAME_NOT_ALLOWED = "CollectionNameNotAllowed"
    COLLECTION_RETAINED_ELSEWHERE = "CollectionRetainedElsewhere"
    OPERATION_HALTED = "OperationHalted"
    COLLECTION_IS_ALIAS = "CollectionIsAlias"
    # bounded cost per tenant (issue 17): a cap the platform admin sets was exceeded
    LIMIT_EXCEEDED = "LimitExceeded"

    # Reprocessed (the backfill Jobs, issue 18)
    BACKFILL_SUCCEEDED = "BackfillSucceeded"
    BACKFILL_RUNNING = "BackfillRunning"
    BACKFILL_FAILED = "BackfillFailed"
    MANUAL_REPROCESS_REQUIRED = "ManualReprocessRequired"

    # Plugin conditions
    VALID = "Valid"


class EventReason(StrEnum):
    """The `reason` of a Kubernetes Event (not a condition)."""

    PLAN_PENDING = "PlanPending"
    RECONFIGURED = "Reconfigured"
    COLLECTION_CREATED = "CollectionCreated"
    RESUMED = "OperationResumed"
    ABANDONED = "OperationAbandoned"
    IGNORED = "OperationIgnored"
    DRIFT = "DriftDetected"
    DELETED = "CollectionDeleted"
    RETAINED = "CollectionRetained"
    RELEASED_UNCLEAN = "ReleasedWithoutCleanup"
    APPLY_FAILED = "ApplyFailed"
    BACKFILL_STARTED = "BackfillStarted"
    BACKFILL_SUCCEEDED = "BackfillSucceeded"
    BACKFILL_FAILED = "BackfillFailed"
    BACKFILL_SUPERSEDED = "BackfillSuperseded"
    BACKFILL_RETRIED = "BackfillRetried"
    BACKFILL_REPLACED = "BackfillJobReplaced"
