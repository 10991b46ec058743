"""One table maps each failure of a pass to its reason, to Stalled or Reconciling, and to
when to try again (a `backoff.RetryKind`: the delay grows with each failure in a row, see
`backoff`); the pass does not choose by hand.

A failure may depend on when it happens: a Qdrant error while observing is the server
refusing us (`QdrantRejected`), the same error while applying a plan is the plan failing
(`ApplyFailed`, with a Warning Event). The first row that matches the exception and the
phase wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from vectorschema.api import Reason
from vectorschema.controller.backoff import RetryKind
from vectorschema.core.planning import PluginConflict, PluginNotFound
from vectorschema.qdrant.errors import (
    CollectionIsAlias,
    CollectionNotFound,
    GatewayError,
    QdrantUnavailable,
)


class ConnectorError(Exception):
    """What a `Connector` raises when it cannot build the namespace's Qdrant connection
    (e.g. its Secret is missing). The connection policy (`k8s.connection`) raises its
    subclass `ConnectionUnavailable`; the table below maps it."""


class ConnectionRefused(ConnectorError):
    """The namespace's connection is refused, before any connection is made: by the
    admin's policy (URL not allowed, Secret without the label) or because its input can
    never work (an invalid URL or API key). Stalled with `reason`; retrying without a
    change cannot help, so a deletion lets the resource go at once."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CapExceeded(Exception):
    """The spec asks more than the admin's caps allow (`core.caps`); the message names
    the field. Stalled/LimitExceeded, nothing touched, nothing connected."""


class Halted(Exception):
    """A recorded operation cannot go on as approved (see `reconcile`): Stalled."""


class Phase(Enum):
    OBSERVE = "observe"  # resolving plugins, connecting, reading the collection
    APPLY = "apply"  # planning is done: counting, recording intent, executing, re-reading


@dataclass(frozen=True)
class Failure:
    """How a failure shows in status."""

    reason: Reason
    stalled: bool  # Stalled=True (needs a change); else Reconciling=True (retrying)
    retry: RetryKind | None  # None: nothing to retry until something changes
    clear_plan: bool = False  # the pending plan no longer means anything
    warn: bool = False  # also post a Warning Event


@dataclass(frozen=True)
class Row:
    error: type[Exception]
    failure: Failure
    phase: Phase | None = None  # None: in any phase


FAILURES: tuple[Row, ...] = (
    Row(PluginNotFound, Failure(Reason.PLUGIN_NOT_FOUND, True, None, clear_plan=True)),
    Row(PluginConflict, Failure(Reason.PLUGIN_CONFLICT, True, None, clear_plan=True)),
    Row(ConnectorError, Failure(Reason.SECRET_NOT_FOUND, False, RetryKind.UNAVAILABLE)),
    Row(QdrantUnavailable, Failure(Reason.QDRANT_UNAVAILABLE, False, RetryKind.UNAVAILABLE)),
    # an alias is never followed (it may name another tenant's collection); it may go
    Row(
        CollectionIsAlias,
        Failure(Reason.COLLECTION_IS_ALIAS, True, RetryKind.REJECTED, clear_plan=True),
    ),
    # deleted under our feet while applying: observe and plan again, soon
    Row(CollectionNotFound, Failure(Reason.PROGRESSING, False, RetryKind.MOVED), Phase.APPLY),
    Row(GatewayError, Failure(Reason.QDRANT_REJECTED, True, RetryKind.REJECTED), Phase.OBSERVE),
    Row(
        GatewayError,
        Failure(Reason.APPLY_FAILED, True, RetryKind.REJECTED, warn=True),
        Phase.APPLY,
    ),
)


def classify(exc: BaseException, phase: Phase) -> Failure | None:
    """The failure `exc` is in `phase`; None for anything unexpected (it propagates)."""
    if isinstance(exc, ConnectionRefused):
        return Failure(exc.reason, True, None, clear_plan=True)
    if isinstance(exc, CapExceeded):
        return Failure(Reason.LIMIT_EXCEEDED, True, None, clear_plan=True)
    if isinstance(exc, Halted):
        return Failure(Reason.OPERATION_HALTED, True, None, clear_plan=True)
    for row in FAILURES:
        if isinstance(exc, row.error) and row.phase in (None, phase):
            return row.failure
    return None
