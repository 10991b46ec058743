"""What a pass hands back to the kopf layer: the status to write, Events to post, and
when to run again. Plain data."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal

from vectorschema.api import NamespaceStatus
from vectorschema.controller.backoff import RetryKind
from vectorschema.core.backfill import Request
from vectorschema.core.schema import Capabilities, ObservedCollection


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    """What a pass last saw of its collection: what the admission webhook plans against
    instead of reading Qdrant (or a tenant's Secret) itself. Tied to the object's UID, the
    collection and the connection it was read through."""

    uid: str
    collection: str
    connection: str
    capabilities: Capabilities
    observed: ObservedCollection | None


@dataclass
class Result:
    status: NamespaceStatus
    events: list[Event] = field(default_factory=list)
    remove_annotation: bool = False
    #: Run again after a backoff of this kind (None: on the resync interval).
    retry: RetryKind | None = None
    #: The Qdrant (its location) that was unavailable: the loop wakes when it is back.
    unavailable: str | None = None
    #: The collection as this pass last read it (None: not read).
    observation: Observation | None = None
    #: The pairs to reprocess that the plan applied in this pass asks for (issue 18).
    reprocess: list[Request] = field(default_factory=list)


class Observations:
    """The last `Observation` of each Namespace resource this replica serves, by
    (namespace, name): one per live resource, dropped when it goes (`forget`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], Observation] = {}

    def put(self, key: tuple[str, str], observation: Observation) -> None:
        with self._lock:
            self._seen[key] = observation

    def get(self, key: tuple[str, str]) -> Observation | None:
        with self._lock:
            return self._seen.get(key)

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._seen.pop(key, None)

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {"observations": len(self._seen)}
