"""Status of both resources: output only, written by the operator.

The plan and operation records, the seed's reconfigure response, and the condition
transitions each resource goes through (`set_ready`, `set_stalled`, ...), built on the
shared rules of `conditions`. Imports only pydantic and the other api modules.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from vectorschema.api.backfill import ReprocessState
from vectorschema.api.base import LIST_MAP_BY_TYPE, CamelModel
from vectorschema.api.conditions import (
    Condition,
    ConditionStatus,
    ConditionType,
    HasConditions,
)
from vectorschema.api.namespace import Strategy
from vectorschema.api.reasons import Reason


class ActionKind(StrEnum):
    CREATE_COLLECTION = "createCollection"
    ADD_VECTOR = "addVector"
    REMOVE_VECTOR = "removeVector"
    REPLACE_VECTOR = "replaceVector"
    UPDATE_VECTOR = "updateVector"
    RECREATE_COLLECTION = "recreateCollection"


class PlannedAction(CamelModel):
    """One action of a plan, as shown in status."""

    action: Annotated[
        ActionKind,
        Field(
            description="createCollection, addVector, removeVector, replaceVector, "
            "updateVector or recreateCollection."
        ),
    ]
    vector: Annotated[str | None, Field(description="The vector it acts on, if one.")] = None
    destructive: Annotated[bool, Field(description="Whether it can lose points.")] = False
    detail: Annotated[str, Field(description="Human-readable detail.")] = ""


class PlanStatus(CamelModel):
    """The pending change, shown until it is applied."""

    fingerprint: Annotated[
        str,
        Field(
            description="Identifies this plan: approve it with spec.confirmPlan or the "
            "vectorschema.dev/confirm annotation."
        ),
    ]
    destructive: Annotated[
        bool, Field(description="Needs confirmation: removes, replaces or recreates.")
    ]
    actions: Annotated[list[PlannedAction], Field(description="The steps, in order.")]
    points_at_risk: Annotated[int, Field(description="Points that would be lost.")] = 0
    points_at_risk_approximate: Annotated[
        bool | None,
        Field(
            description="True when pointsAtRisk is Qdrant's estimate (an exact count took "
            "too long); unset when it is exact."
        ),
    ] = None
    vectors_at_risk: Annotated[
        list[str], Field(description="Vectors whose data would be lost.")
    ] = Field(default_factory=list)
    reason: Annotated[str, Field(description="Why the plan is what it is.")] = ""


class LastReconfigure(CamelModel):
    """The seed's reconfigure response, field for field, plus what the seed leaves out."""

    status: Annotated[
        Literal["reconfigured", "no_changes_needed"],
        Field(description="reconfigured or no_changes_needed."),
    ]
    previous_points_count: Annotated[int, Field(description="Points before the change.")]
    vectors_added: Annotated[list[str], Field(description="Vectors created.")]
    vectors_total: Annotated[list[str], Field(description="Vectors after the change.")]
    collections_to_reprocess: Annotated[
        list[str],
        Field(description="Ingestion collections fed by plugins whose vectors were added."),
    ]
    message: Annotated[str, Field(description="Human-readable summary.")]
    vectors_removed: Annotated[list[str], Field(description="Vectors deleted.")] = Field(
        default_factory=list
    )
    vectors_replaced: Annotated[
        list[str], Field(description="Vectors deleted and created with a new definition.")
    ] = Field(default_factory=list)
    points_deleted: Annotated[int, Field(description="Points lost.")] = 0
    strategy: Annotated[Strategy, Field(description="The strategy applied.")] = Strategy.AUTO
    plan_fingerprint: Annotated[
        str | None, Field(description="Fingerprint of the plan applied.")
    ] = None
    time: Annotated[str | None, Field(description="When it finished (RFC 3339, UTC).")] = None


class StepState(StrEnum):
    PENDING = "Pending"
    DONE = "Done"


class OperationStep(CamelModel):
    """One step of a recorded operation, and whether it is done."""

    action: Annotated[ActionKind, Field(description="The step's action (see plan.actions).")]
    vector: Annotated[str | None, Field(description="The vector it acts on, if one.")] = None
    state: Annotated[StepState, Field(description="Pending or Done.")] = StepState.PENDING


class Operation(CamelModel):
    """A plan that needed approval, recorded before its first destructive step and updated
    after each step, so a crash or an outage mid-way resumes the remaining steps, and only
    while the same approval, collection, connection and ownership still hold.

    `result` is the `lastReconfigure` the operation will report once every step is done,
    prepared before the first write (it needs the points count from before the change).
    """

    model_config = ConfigDict(frozen=False)

    plan_fingerprint: Annotated[str, Field(description="Fingerprint of the plan being applied.")]
    started: Annotated[str, Field(description="When it started (RFC 3339, UTC).")]
    collection: Annotated[str, Field(description="The Qdrant collection it changes.")]
    connection: Annotated[
        str, Field(description="The Qdrant it talks to: the server URL, or 'embedded'.")
    ]
    approved_by: Annotated[
        Literal["confirm", "confirmPlan", "annotation"],
        Field(description="What approved it: confirm, confirmPlan or annotation."),
    ]
    generation: Annotated[
        int | None, Field(description="The metadata.generation that approved it.")
    ] = None
    steps: Annotated[
        list[OperationStep], Field(description="The plan's steps, in order, with their state.")
    ]
    desired_fingerprint: Annotated[
        str | None,
        Field(
            description="Fingerprint of the desired schema it was approved for: a changed "
            "spec closes the operation instead of resuming it."
        ),
    ] = None
    claims: Annotated[
        int, Field(description="How many passes took the operation up (each claim is a write).")
    ] = 0
    result: Annotated[
        LastReconfigure, Field(description="The lastReconfigure to report once done.")
    ]

    @property
    def done(self) -> list[bool]:
        return [s.state is StepState.DONE for s in self.steps]

    @property
    def step_pairs(self) -> list[tuple[str, str | None]]:
        return [(s.action.value, s.vector) for s in self.steps]


class ReprocessEntry(CamelModel):
    """One (collection to reprocess, plugin) pair after a plan ran, and its backfill Job."""

    collection: Annotated[
        str, Field(description="The ingestion collection id (spec.collections[].id).")
    ]
    plugin: Annotated[str, Field(description="The plugin whose vectors the Job fills.")]
    state: Annotated[
        ReprocessState,
        Field(
            description="Pending (waiting for a slot under the admin's caps), Running, "
            "Succeeded, Failed, or Manual (the plugin has no spec.backfill: re-ingest by hand)."
        ),
    ]
    vectors: Annotated[list[str], Field(description="The vectors to fill.")] = Field(
        default_factory=list
    )
    recreated: Annotated[
        bool, Field(description="The collection was recreated: re-ingest what it feeds.")
    ] = False
    plan_fingerprint: Annotated[
        str | None, Field(description="The plan whose change the Job fills in.")
    ] = None
    job: Annotated[
        str | None, Field(description="The Job's name (in the resource's namespace).")
    ] = None
    attempts: Annotated[
        int, Field(description="Jobs started for this pair and plan (retries count).")
    ] = 0
    message: Annotated[
        str,
        Field(description="On failure, the Pod's termination message; else a short note."),
    ] = ""
    start_time: Annotated[
        str | None, Field(description="When the current Job was created (RFC 3339, UTC).")
    ] = None
    completion_time: Annotated[
        str | None, Field(description="When it succeeded or failed (RFC 3339, UTC).")
    ] = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.collection, self.plugin)


#: How many applied fingerprints status.appliedPlans keeps.
APPLIED_PLANS_KEPT = 16


class NamespaceStatus(HasConditions, CamelModel):
    """Status of a Namespace: output only, never an input to reconciling (but `operation`)."""

    model_config = ConfigDict(frozen=False)

    observed_generation: Annotated[
        int | None, Field(description="The metadata.generation last reconciled.")
    ] = None
    conditions: Annotated[
        list[Condition],
        Field(
            description="Ready, Reconciling and Stalled (kstatus): Ready=True once the "
            "collection matches the spec.",
            json_schema_extra=LIST_MAP_BY_TYPE,
        ),
    ] = Field(default_factory=list)
    collection: Annotated[str | None, Field(description="The Qdrant collection.")] = None
    points_count: Annotated[
        int | None, Field(description="Points in the collection when last observed.")
    ] = None
    vectors: Annotated[
        list[str] | None, Field(description="Named vectors of the live collection.")
    ] = None
    vector_count: Annotated[
        int | None, Field(description="How many named vectors the live collection has.")
    ] = None
    plan: Annotated[
        PlanStatus | None,
        Field(description="The pending change, if any; a destructive one awaits confirmation."),
    ] = None
    last_reconfigure: Annotated[
        LastReconfigure | None,
        Field(description="The last change applied, as the seed's reconfigure response."),
    ] = None
    operation: Annotated[
        Operation | None,
        Field(description="A destructive step in progress; a restarted operator finishes it."),
    ] = None
    applied_plans: Annotated[
        list[str] | None,
        Field(
            max_length=APPLIED_PLANS_KEPT,
            description="Fingerprints of the applied plans that needed approval, newest "
            "first: spec.confirmPlan never approves one of them again (an approval is spent "
            "once; the vectorschema.dev/confirm annotation approves afresh).",
        ),
    ] = None

    reprocess: Annotated[
        list[ReprocessEntry] | None,
        Field(
            description="With spec.reprocess: Auto, the backfill of each collection to "
            "reprocess by each plugin whose vectors the last plans added, replaced or "
            "recreated: its Job and state. The Reprocessed condition sums it up.",
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["collection", "plugin"],
            },
        ),
    ] = None
    reprocess_retry: Annotated[
        str | None,
        Field(
            description="The last value of the vectorschema.dev/retry-backfill annotation "
            "acted on (each new value retries the failed Jobs once)."
        ),
    ] = None

    def set_live(self, points_count: int | None, vectors: list[str] | None) -> None:
        """Record what the live collection looks like (None: not known)."""
        self.points_count = points_count
        self.vectors = vectors
        self.vector_count = None if vectors is None else len(vectors)

    # -- condition transitions ------------------------------------------------------

    def _set_all(
        self,
        *,
        ready: tuple[ConditionStatus, str, str],
        reconciling: tuple[ConditionStatus, str, str],
        stalled: tuple[ConditionStatus, str, str],
        generation: int | None,
        now: datetime,
    ) -> None:
        self.observed_generation = generation
        for type_, (status, reason, message) in (
            (ConditionType.READY, ready),
            (ConditionType.RECONCILING, reconciling),
            (ConditionType.STALLED, stalled),
        ):
            self.set_condition(type_, status, reason, message, generation=generation, now=now)

    def set_ready(self, message: str, *, generation: int | None, now: datetime) -> None:
        F = ConditionStatus.FALSE
        self._set_all(
            ready=(ConditionStatus.TRUE, Reason.RECONCILED, message),
            reconciling=(F, Reason.RECONCILED, ""),
            stalled=(F, Reason.RECONCILED, ""),
            generation=generation,
            now=now,
        )

    def set_reconciling(
        self, reason: str, message: str, *, generation: int | None, now: datetime
    ) -> None:
        F = ConditionStatus.FALSE
        self._set_all(
            ready=(F, reason, message),
            reconciling=(ConditionStatus.TRUE, reason, message),
            stalled=(F, reason, ""),
            generation=generation,
            now=now,
        )

    def set_stalled(
        self, reason: str, message: str, *, generation: int | None, now: datetime
    ) -> None:
        F = ConditionStatus.FALSE
        self._set_all(
            ready=(F, reason, message),
            reconciling=(F, reason, ""),
            stalled=(ConditionStatus.TRUE, reason, message),
            generation=generation,
            now=now,
        )

    def set_reprocessed(
        self,
        status: ConditionStatus | None,
        reason: str,
        message: str,
        *,
        generation: int | None,
        now: datetime,
    ) -> None:
        """The Reprocessed condition (None: removed; there is nothing to reprocess).
        Independent of Ready, which keeps meaning "the schema is as declared"."""
        if status is None:
            self.conditions = [c for c in self.conditions if c.type != ConditionType.REPROCESSED]
            return
        self.set_condition(
            ConditionType.REPROCESSED, status, reason, message, generation=generation, now=now
        )

    def set_awaiting_confirmation(
        self, message: str, *, generation: int | None, now: datetime
    ) -> None:
        """Waiting for a person: not progressing, not stalled by an error, not ready."""
        F = ConditionStatus.FALSE
        reason = Reason.AWAITING_CONFIRMATION
        self._set_all(
            ready=(F, reason, message),
            reconciling=(F, reason, ""),
            stalled=(F, reason, ""),
            generation=generation,
            now=now,
        )


class PluginStatus(HasConditions, CamelModel):
    """Status of a Plugin: whether its definition is valid, and which vectors it brings."""

    model_config = ConfigDict(frozen=False)

    observed_generation: Annotated[
        int | None, Field(description="The metadata.generation last checked.")
    ] = None
    conditions: Annotated[
        list[Condition],
        Field(
            description="Ready: whether the definition is valid.",
            json_schema_extra=LIST_MAP_BY_TYPE,
        ),
    ] = Field(default_factory=list)
    vectors: Annotated[list[str] | None, Field(description="Names of the vectors it brings.")] = (
        None
    )

    def set_valid(self, vectors: list[str], *, generation: int | None, now: datetime) -> None:
        """The definition parses: Ready=True, and the vectors it brings."""
        self._set_ready(ConditionStatus.TRUE, Reason.VALID, "", generation=generation, now=now)
        self.vectors = vectors

    def set_invalid(self, message: str, *, generation: int | None, now: datetime) -> None:
        """The definition does not parse: Ready=False, with the offending field."""
        self._set_ready(
            ConditionStatus.FALSE, Reason.INVALID_SPEC, message, generation=generation, now=now
        )
        self.vectors = None

    def _set_ready(
        self,
        status: ConditionStatus,
        reason: str,
        message: str,
        *,
        generation: int | None,
        now: datetime,
    ) -> None:
        # A Plugin has one condition: anything else found in its status is dropped.
        self.conditions = [c for c in self.conditions if c.type == ConditionType.READY]
        self.observed_generation = generation
        self.set_condition(
            ConditionType.READY, status, reason, message, generation=generation, now=now
        )
