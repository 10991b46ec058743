"""What the operator counts, decided here without any metrics library: how a pass ended,
what state a Namespace is in, and every Qdrant call (a `QdrantGateway` that times and
classifies each call of the one it wraps). The kopf layer (`k8s.metrics`) turns these into
Prometheus series; unit tests check the decisions against fakes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from vectorschema.api import (
    ConditionStatus,
    ConditionType,
    NamespaceStatus,
    Reason,
    ReprocessState,
)
from vectorschema.controller.results import Result
from vectorschema.core.schema import Capabilities, CollectionSettings, ObservedCollection, VectorDef
from vectorschema.qdrant.errors import QdrantRejected, QdrantUnavailable
from vectorschema.qdrant.protocol import QdrantGateway

T = TypeVar("T")

#: The Qdrant calls that destroy stored data, by the kind reported in metrics.
DESTRUCTIVE = {"delete_collection": "deleteCollection", "delete_vector": "deleteVector"}


class Recorder(Protocol):
    """Where the measurements go (Prometheus in the operator, a list in tests)."""

    def qdrant_request(self, server: str, outcome: str, seconds: float) -> None: ...

    def destructive_operation(self, kind: str) -> None: ...


@dataclass(frozen=True)
class NamespaceState:
    """A Namespace resource as the `vectorschema_namespaces` gauge counts it."""

    ready: str
    reason: str
    awaiting_approval: bool
    #: The state of each of its backfill pairs (status.reprocess).
    backfill: tuple[str, ...] = ()


def pass_result(result: Result | None) -> str:
    """How a pass ended: ready, awaiting_approval, reconciling, stalled, conflict or gone."""
    if result is None:
        return "gone"
    ready = result.status.condition(ConditionType.READY)
    if ready is None:
        return "conflict"  # the object changed under the pass: it runs again
    if ready.status == ConditionStatus.TRUE:
        return "ready"
    if ready.reason == Reason.AWAITING_CONFIRMATION:
        return "awaiting_approval"
    stalled = result.status.condition(ConditionType.STALLED)
    if stalled is not None and stalled.status == ConditionStatus.TRUE:
        return "stalled"
    return "reconciling"


def namespace_state(status: NamespaceStatus) -> NamespaceState | None:
    """The state a status shows, or None when it shows none yet."""
    ready = status.condition(ConditionType.READY)
    if ready is None:
        return None
    awaiting = ready.reason == Reason.AWAITING_CONFIRMATION
    backfill = tuple(e.state.value for e in status.reprocess or [])
    return NamespaceState(ready.status.value, ready.reason, awaiting, backfill)


def backfill_durations(
    before: NamespaceStatus | None, after: NamespaceStatus
) -> list[tuple[str, float]]:
    """(state, seconds) of each backfill Job this pass saw end (Succeeded or Failed): from
    its creation to its end, as status.reprocess records them."""
    ended = (ReprocessState.SUCCEEDED, ReprocessState.FAILED)
    seen = {
        (e.job, e.state) for e in (before.reprocess or [] if before is not None else []) if e.job
    }
    out: list[tuple[str, float]] = []
    for e in after.reprocess or []:
        if e.state not in ended or not e.job or (e.job, e.state) in seen:
            continue
        if e.start_time is None or e.completion_time is None:
            continue
        try:
            start = datetime.strptime(e.start_time, "%Y-%m-%dT%H:%M:%SZ")
            end = datetime.strptime(e.completion_time, "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            continue
        out.append((e.state.value, max(0.0, (end - start).total_seconds())))
    return out


def points_deleted(before: NamespaceStatus | None, after: NamespaceStatus) -> int:
    """Points a pass deleted: those of a reconfigure it reported that was not there before."""
    new = after.last_reconfigure
    if new is None:
        return 0
    old = before.last_reconfigure if before is not None else None
    if old is not None and (old.plan_fingerprint, old.time) == (new.plan_fingerprint, new.time):
        return 0
    return new.points_deleted


def server_label(url: str | None) -> str:
    """A Qdrant server as a metric label: its origin (never a path, query or credential),
    or `embedded` for the local store."""
    if not url:
        return "embedded"
    try:
        parts = urlsplit(url)
        host = parts.hostname or "invalid"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "invalid"
    return f"{parts.scheme}://{host}{port}"


def outcome_of(exc: BaseException | None) -> str:
    """ok, unavailable (retried), rejected (a 4xx) or error."""
    if exc is None:
        return "ok"
    if isinstance(exc, QdrantUnavailable):
        return "unavailable"
    if isinstance(exc, QdrantRejected):
        return "rejected"
    return "error"


class MeteredGateway:
    """A `QdrantGateway` that records each call of `inner` (outcome and duration) and
    each destructive one, then behaves exactly as `inner` did."""

    def __init__(
        self,
        inner: QdrantGateway,
        server: str,
        recorder: Recorder,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._server = server
        self._recorder = recorder
        self._clock = clock

    def _call(self, name: str, call: Callable[[], T]) -> T:
        started = self._clock()
        try:
            value = call()
        except BaseException as exc:
            self._recorder.qdrant_request(self._server, outcome_of(exc), self._clock() - started)
            raise
        self._recorder.qdrant_request(self._server, "ok", self._clock() - started)
        if name in DESTRUCTIVE:
            self._recorder.destructive_operation(DESTRUCTIVE[name])
        return value

    @property
    def location(self) -> str:
        return self._inner.location

    def capabilities(self) -> Capabilities:
        return self._call("capabilities", self._inner.capabilities)

    def check(self, vectors: Sequence[VectorDef]) -> None:
        self._inner.check(vectors)  # no Qdrant call: nothing to record

    def observe(self, collection: str) -> ObservedCollection | None:
        return self._call("observe", lambda: self._inner.observe(collection))

    def count_with_vector(self, collection: str, vector: str, exact: bool = True) -> int:
        return self._call(
            "count_with_vector", lambda: self._inner.count_with_vector(collection, vector, exact)
        )

    def create_collection(
        self,
        collection: str,
        vectors: Sequence[VectorDef],
        settings: CollectionSettings,
        metadata: Mapping[str, Any],
    ) -> None:
        self._call(
            "create_collection",
            lambda: self._inner.create_collection(collection, vectors, settings, metadata),
        )

    def delete_collection(self, collection: str) -> None:
        self._call("delete_collection", lambda: self._inner.delete_collection(collection))

    def create_vector(self, collection: str, vector: VectorDef) -> None:
        self._call("create_vector", lambda: self._inner.create_vector(collection, vector))

    def delete_vector(self, collection: str, vector: str) -> None:
        self._call("delete_vector", lambda: self._inner.delete_vector(collection, vector))

    def update_vector(self, collection: str, vector: VectorDef) -> None:
        self._call("update_vector", lambda: self._inner.update_vector(collection, vector))

    def set_metadata(self, collection: str, metadata: Mapping[str, Any]) -> None:
        self._call("set_metadata", lambda: self._inner.set_metadata(collection, metadata))

    def close(self) -> None:
        self._inner.close()
