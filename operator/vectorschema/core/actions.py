"""Plan actions: one frozen dataclass per kind of change, and the plan that holds them.

The executor matches on the class, the report reads the names off the actions, and the
status shows each as a `PlannedAction` (`kind` is the wire name). Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from vectorschema.api import ActionKind, PlannedAction, PlanStatus
from vectorschema.core.schema import CollectionSettings, VectorDef


class _Step:
    """What every action shows: its kind, whether it can lose points, what it acts on."""

    kind: ClassVar[ActionKind]
    destructive: ClassVar[bool] = False
    detail: str

    @property
    def name(self) -> str:
        """The vector it acts on ("" for a whole-collection action)."""
        return ""

    def to_status(self) -> PlannedAction:
        return PlannedAction(
            action=self.kind,
            vector=self.name or None,
            destructive=self.destructive,
            detail=self.detail,
        )


@dataclass(frozen=True)
class CreateCollection(_Step):
    """Create the collection with every desired vector (none was there)."""

    kind: ClassVar[ActionKind] = ActionKind.CREATE_COLLECTION
    vectors: tuple[VectorDef, ...]
    settings: CollectionSettings
    detail: str = ""


@dataclass(frozen=True)
class RecreateCollection(_Step):
    """Drop the collection and create it again: every point is lost.

    `dropped` is every live vector (all their data goes); `added`, `removed` and
    `replaced` say what the new schema changes, for the report.
    """

    kind: ClassVar[ActionKind] = ActionKind.RECREATE_COLLECTION
    destructive: ClassVar[bool] = True
    vectors: tuple[VectorDef, ...]
    settings: CollectionSettings
    dropped: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    replaced: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class AddVector(_Step):
    """Create a named vector on the live collection."""

    kind: ClassVar[ActionKind] = ActionKind.ADD_VECTOR
    vector: VectorDef
    detail: str = ""

    @property
    def name(self) -> str:
        return self.vector.name


@dataclass(frozen=True)
class RemoveVector(_Step):
    """Delete a named vector (and its data) from the live collection."""

    kind: ClassVar[ActionKind] = ActionKind.REMOVE_VECTOR
    destructive: ClassVar[bool] = True
    old: VectorDef
    detail: str = ""

    @property
    def name(self) -> str:
        return self.old.name


@dataclass(frozen=True)
class ReplaceVector(_Step):
    """Delete a named vector and create it with a new structure: its data is lost."""

    kind: ClassVar[ActionKind] = ActionKind.REPLACE_VECTOR
    destructive: ClassVar[bool] = True
    old: VectorDef
    vector: VectorDef
    detail: str = ""

    @property
    def name(self) -> str:
        return self.vector.name


@dataclass(frozen=True)
class UpdateVector(_Step):
    """Change a vector's tuning (on-disk, HNSW, quantization) in place."""

    kind: ClassVar[ActionKind] = ActionKind.UPDATE_VECTOR
    old: VectorDef
    vector: VectorDef
    detail: str = ""

    @property
    def name(self) -> str:
        return self.vector.name


Action = (
    CreateCollection | RecreateCollection | AddVector | RemoveVector | ReplaceVector | UpdateVector
)


@dataclass(frozen=True)
class AtRisk:
    """Points a plan would lose; `exact` False when Qdrant estimated them (an exact count
    was too slow), which every message says with "about"."""

    points: int = 0
    exact: bool = True

    def describe(self) -> str:
        return f"{self.points} point(s)" if self.exact else f"about {self.points} point(s)"


@dataclass(frozen=True)
class Plan:
    """The actions that bring the live collection to the desired schema."""

    collection: str
    actions: tuple[Action, ...]
    fingerprint: str
    reason: str = ""
    notes: tuple[str, ...] = ()
    drift: bool = False

    @property
    def empty(self) -> bool:
        return not self.actions

    @property
    def destructive(self) -> bool:
        return any(a.destructive for a in self.actions)

    @property
    def recreates(self) -> bool:
        return any(isinstance(a, RecreateCollection) for a in self.actions)

    @property
    def creates(self) -> bool:
        return any(isinstance(a, CreateCollection) for a in self.actions)

    def names(
        self, kind: type[AddVector | RemoveVector | ReplaceVector | UpdateVector]
    ) -> list[str]:
        """The vectors the actions of one kind act on, in plan order."""
        return [a.name for a in self.actions if isinstance(a, kind)]

    @property
    def vectors_at_risk(self) -> list[str]:
        """Vectors whose stored data the plan deletes (all of them for a recreate)."""
        names: list[str] = []
        for a in self.actions:
            if isinstance(a, RecreateCollection):
                return list(a.dropped)
            if isinstance(a, RemoveVector | ReplaceVector):
                names.append(a.name)
        return names

    def to_status(self, at_risk: AtRisk) -> PlanStatus:
        return PlanStatus(
            fingerprint=self.fingerprint,
            destructive=self.destructive,
            actions=[a.to_status() for a in self.actions],
            points_at_risk=at_risk.points,
            points_at_risk_approximate=None if at_risk.exact else True,
            vectors_at_risk=self.vectors_at_risk,
            reason=self.reason,
        )
