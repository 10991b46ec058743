"""Conditions (Kubernetes API conventions, kstatus-compatible) and their transitions.

`HasConditions` is the one place the rules live, for every status that carries
conditions (Namespace and Plugin): a condition's `lastTransitionTime` moves only when its
status changes, conditions are kept in a fixed order, and times are RFC 3339 in UTC.
Imports only pydantic and the api base.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from vectorschema.api.base import CamelModel


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    READY = "Ready"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"
    #: The backfill Jobs of the last plans (spec.reprocess: Auto); not a kstatus condition.
    REPROCESSED = "Reprocessed"


#: The order conditions are listed in.
CONDITION_TYPES = tuple(ConditionType)


class Condition(CamelModel):
    """A Kubernetes condition (API conventions, kstatus-compatible)."""

    type: Annotated[str, Field(description="Ready, Reconciling, Stalled or Reprocessed.")]
    status: Annotated[ConditionStatus, Field(description="True, False or Unknown.")]
    reason: Annotated[
        str, Field(description="Why, as a CamelCase constant (e.g. AwaitingConfirmation).")
    ]
    message: Annotated[str, Field(description="Human-readable detail.")] = ""
    last_transition_time: Annotated[
        str, Field(description="When status last changed (RFC 3339, UTC).")
    ]
    observed_generation: Annotated[
        int | None, Field(description="The metadata.generation this condition describes.")
    ] = None


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC, second precision, as Kubernetes writes times."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


class HasConditions:
    """Condition transitions for a status model with a `conditions` list."""

    if TYPE_CHECKING:
        conditions: list[Condition]

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def set_condition(
        self,
        type_: ConditionType,
        status: ConditionStatus,
        reason: str,
        message: str,
        *,
        generation: int | None,
        now: datetime,
    ) -> None:
        """Set one condition; lastTransitionTime moves only when its status changes."""
        old = self.condition(type_)
        transition = (
            old.last_transition_time
            if old is not None and old.status == status and old.last_transition_time
            else timestamp(now)
        )
        new = Condition(
            type=type_.value,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=transition,
            observed_generation=generation,
        )
        others = [c for c in self.conditions if c.type != type_]
        self.conditions = sorted([*others, new], key=_condition_order)


def _condition_order(c: Condition) -> int:
    types = [t.value for t in CONDITION_TYPES]
    return types.index(c.type) if c.type in types else len(types)
