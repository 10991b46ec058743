"""What a pass hands back to the kopf layer: the status to write, Events to post, and
when to run again. Plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vectorschema.api import NamespaceStatus
from vectorschema.controller.backoff import RetryKind


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
    #: Run again after a backoff of this kind (None: on the resync interval).
    retry: RetryKind | None = None
    #: The Qdrant (its location) that was unavailable: the loop wakes when it is back.
    unavailable: str | None = None
