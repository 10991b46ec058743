"""Condition reasons and Event reasons: CamelCase constants, in one place.

Every reason a user can see in `kubectl get vns` / `kubectl describe vns` is here, so the
README's status contract and the code cannot drift apart.
"""

from __future__ import annotations

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

# Plugin conditions
VALID = "Valid"

# Event reasons (not conditions)
EVENT_PLAN_PENDING = "PlanPending"
EVENT_RECONFIGURED = "Reconfigured"
EVENT_COLLECTION_CREATED = "CollectionCreated"
EVENT_RESUMED = "OperationResumed"
EVENT_DRIFT = "DriftDetected"
EVENT_DELETED = "CollectionDeleted"
EVENT_RETAINED = "CollectionRetained"
EVENT_RELEASED_UNCLEAN = "ReleasedWithoutCleanup"
