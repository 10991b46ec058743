"""Planning: a pure function from (desired, observed) to a typed plan of actions.

Nothing here does I/O. `resolve_desired` merges the plugins' vectors (or says which plugin
is missing or which two conflict); `make_plan` compares the desired schema with the live
collection and returns the actions that close the gap, which ones are destructive, and a
fingerprint that identifies the plan for approval; `approval` decides whether a
destructive plan may run; `report` prepares the seed's reconfigure response for a plan.
The executor (`executor.py`) performs the actions; unit tests cover this module
exhaustively without a cluster or a Qdrant.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from vectorschema.models import (
    ActionKind,
    IngestionCollection,
    LastReconfigure,
    NamespaceSpec,
    PlannedAction,
    PlanStatus,
    PluginSpec,
    Strategy,
)
from vectorschema.schema import (
    IN_PLACE_VECTORS_SINCE,
    Capabilities,
    CollectionSettings,
    DesiredSchema,
    ObservedCollection,
    VectorDef,
    vector_def_from_spec,
)

# --- desired schema -------------------------------------------------------------------


class PluginNotFound(Exception):
    """One or more referenced Plugins do not exist."""

    def __init__(self, missing: Sequence[str]) -> None:
        self.missing = list(missing)
        names = ", ".join(self.missing)
        super().__init__(
            f"plugin(s) not found: {names}; create the Plugin or define vectors inline"
        )


class PluginConflict(Exception):
    """Two plugins define the same vector name differently."""

    def __init__(
        self, vector: str, first: str, first_def: VectorDef, second: str, second_def: VectorDef
    ) -> None:
        self.vector = vector
        self.plugins = (first, second)
        super().__init__(
            f"vector {vector!r} is defined differently by plugin {first!r} "
            f"({first_def.describe()}) and plugin {second!r} ({second_def.describe()})"
        )


def resolve_desired(spec: NamespaceSpec, plugins: Mapping[str, PluginSpec]) -> DesiredSchema:
    """The union of every listed plugin's vectors; identical definitions merge.

    Raises PluginNotFound (every missing name at once) or PluginConflict (first clash).
    """
    missing = [p.name for p in spec.plugins if p.vectors is None and p.name not in plugins]
    if missing:
        raise PluginNotFound(missing)
    vectors: dict[str, VectorDef] = {}
    origins: dict[str, list[str]] = {}
    for ref in spec.plugins:
        specs = ref.vectors if ref.vectors is not None else plugins[ref.name].vectors
        for vspec in specs:
            vdef = vector_def_from_spec(vspec)
            known = vectors.get(vdef.name)
            if known is None:
                vectors[vdef.name] = vdef
                origins[vdef.name] = [ref.name]
            elif known == vdef:
                origins[vdef.name].append(ref.name)
            else:
                raise PluginConflict(vdef.name, origins[vdef.name][0], known, ref.name, vdef)
    return DesiredSchema(
        vectors=tuple(vectors.values()),
        origins={k: tuple(v) for k, v in origins.items()},
        settings=CollectionSettings.from_spec(spec),
    )


# --- plans ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One typed step. `vector` is the new definition, `old` the replaced one."""

    kind: ActionKind
    vector: VectorDef | None = None
    old: VectorDef | None = None
    name: str = ""
    vectors: tuple[VectorDef, ...] = ()
    settings: CollectionSettings = field(default_factory=CollectionSettings)
    detail: str = ""

    @property
    def destructive(self) -> bool:
        return self.kind in (
            ActionKind.REMOVE_VECTOR,
            ActionKind.REPLACE_VECTOR,
            ActionKind.RECREATE_COLLECTION,
        )

    def to_status(self) -> PlannedAction:
        return PlannedAction(
            action=self.kind,
            vector=self.name or None,
            destructive=self.destructive,
            detail=self.detail,
        )


@dataclass(frozen=True)
class Plan:
    """The actions that bring the live collection to the desired schema."""

    collection: str
    actions: tuple[Action, ...]
    fingerprint: str
    reason: str = ""
    notes: tuple[str, ...] = ()
    drift: bool = False
    # The live vectors a recreate drops (all of them), for `vectors_at_risk`.
    dropped: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.actions

    @property
    def destructive(self) -> bool:
        return any(a.destructive for a in self.actions)

    @property
    def recreates(self) -> bool:
        return any(a.kind is ActionKind.RECREATE_COLLECTION for a in self.actions)

    @property
    def vectors_at_risk(self) -> list[str]:
        """Vectors whose stored data the plan deletes (all of them for a recreate)."""
        names: list[str] = []
        for a in self.actions:
            if a.kind is ActionKind.RECREATE_COLLECTION:
                return list(self.dropped)
            if a.kind in (ActionKind.REMOVE_VECTOR, ActionKind.REPLACE_VECTOR):
                names.append(a.name)
        return names

    def to_status(self, points_at_risk: int) -> PlanStatus:
        return PlanStatus(
            fingerprint=self.fingerprint,
            destructive=self.destructive,
            actions=[a.to_status() for a in self.actions],
            points_at_risk=points_at_risk,
            vectors_at_risk=self.vectors_at_risk,
            reason=self.reason,
        )


def fingerprint(
    collection: str,
    desired: DesiredSchema,
    observed: ObservedCollection | None,
    strategy: Strategy,
    capabilities: Capabilities,
) -> str:
    """A stable hash of what the plan is computed from (not of the points count).

    Same observed schema, same desired schema, same strategy: same fingerprint, on any
    machine and across restarts. Any change to either side gives a new one, so an approval
    pinned to a fingerprint can never approve a different change.
    """
    doc: dict[str, Any] = {
        "collection": collection,
        "strategy": strategy.value,
        "inPlace": capabilities.in_place_vectors,
        "tunes": capabilities.tunes_vectors,
        "clusterSettings": capabilities.reports_cluster_settings,
        "desired": {
            "vectors": sorted((v.canonical() for v in desired.vectors), key=lambda d: d["name"]),
            "settings": _settings_doc(desired.settings),
        },
        "observed": None
        if observed is None
        else {
            "vectors": sorted((v.canonical() for v in observed.vectors), key=lambda d: d["name"]),
            "settings": _settings_doc(observed.settings),
        },
    }
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _settings_doc(s: CollectionSettings) -> dict[str, Any]:
    return {
        "shardNumber": s.shard_number,
        "replicationFactor": s.replication_factor,
        "writeConsistencyFactor": s.write_consistency_factor,
        "onDiskPayload": s.on_disk_payload,
    }


def make_plan(
    collection: str,
    desired: DesiredSchema,
    observed: ObservedCollection | None,
    *,
    strategy: Strategy,
    capabilities: Capabilities,
    last_applied: Sequence[str] | None = None,
) -> Plan:
    """Compare desired with observed; return the actions that close the gap.

    `last_applied` is the vector names the operator last saw live (status.vectors). When
    the live names differ from them, someone changed the collection by hand: the plan
    that reverts it is marked `drift` and waits for approval like a destructive one. A
    collection deleted by hand is simply created again (nothing is left to lose).
    """
    plan = _make_plan(collection, desired, observed, strategy=strategy, capabilities=capabilities)
    if plan.empty or observed is None or last_applied is None:
        return plan
    gone = [n for n in last_applied if n not in observed.names]
    extra = [n for n in observed.names if n not in last_applied]
    if not gone and not extra:
        return plan
    what = []
    if gone:
        what.append("removed " + ", ".join(gone))
    if extra:
        what.append("added " + ", ".join(extra))
    why = "the live collection was changed outside the operator (" + "; ".join(what) + ")"
    return replace(plan, drift=True, reason=f"{why}; {plan.reason}" if plan.reason else why)


def _make_plan(
    collection: str,
    desired: DesiredSchema,
    observed: ObservedCollection | None,
    *,
    strategy: Strategy,
    capabilities: Capabilities,
) -> Plan:
    fp = fingerprint(collection, desired, observed, strategy, capabilities)
    if observed is None:
        action = Action(
            ActionKind.CREATE_COLLECTION,
            vectors=desired.vectors,
            settings=desired.settings,
            detail=f"create collection with {len(desired.vectors)} vector(s): "
            + ", ".join(desired.names),
        )
        return Plan(collection, (action,), fp)

    want = desired.by_name
    have = observed.by_name
    added = [v for v in desired.vectors if v.name not in have]
    removed = [v for v in observed.vectors if v.name not in want]
    replaced = [
        (have[v.name], v)
        for v in desired.vectors
        if v.name in have and have[v.name].structure != v.structure
    ]
    retuned = [
        (have[v.name], v)
        for v in desired.vectors
        if v.name in have
        and have[v.name].structure == v.structure
        and have[v.name].tuning != v.tuning
    ]
    notes: list[str] = []
    if retuned and not capabilities.tunes_vectors:
        # Local mode accepts tuning updates and ignores them: planning them would loop.
        notes.append(
            "tuning of "
            + ", ".join(new.name for _, new in retuned)
            + " is not applied: this Qdrant does not support updating vector parameters"
        )
        retuned = []

    shard_change = (
        capabilities.reports_cluster_settings
        and desired.settings.shard_number is not None
        and observed.settings.shard_number is not None
        and desired.settings.shard_number != observed.settings.shard_number
    )
    schema_change = bool(added or removed or replaced or retuned)
    if not schema_change and not shard_change:
        return Plan(collection, (), fp, notes=tuple(notes))

    recreate_reason = ""
    if strategy is Strategy.RECREATE:
        recreate_reason = "strategy is Recreate: the collection is dropped and created again"
    elif shard_change:
        recreate_reason = (
            f"shardNumber {observed.settings.shard_number} -> {desired.settings.shard_number} "
            "cannot change in place"
        )
    elif (added or removed or replaced) and not capabilities.in_place_vectors:
        recreate_reason = (
            f"Qdrant {capabilities.server_version} cannot add or remove a named vector in place "
            f"(needs >= {'.'.join(map(str, IN_PLACE_VECTORS_SINCE))})"
        )
    if recreate_reason:
        action = Action(
            ActionKind.RECREATE_COLLECTION,
            vectors=desired.vectors,
            settings=desired.settings,
            detail=_recreate_detail(added, removed, replaced, retuned),
        )
        return Plan(
            collection,
            (action,),
            fp,
            reason=recreate_reason,
            notes=tuple(notes),
            dropped=tuple(observed.names),
        )

    actions: list[Action] = []
    for v in removed:
        actions.append(
            Action(ActionKind.REMOVE_VECTOR, old=v, name=v.name, detail=f"remove {v.describe()}")
        )
    for old, new in replaced:
        actions.append(
            Action(
                ActionKind.REPLACE_VECTOR,
                vector=new,
                old=old,
                name=new.name,
                detail=f"{old.describe()} -> {new.describe()}",
            )
        )
    for v in added:
        actions.append(Action(ActionKind.ADD_VECTOR, vector=v, name=v.name, detail=v.describe()))
    for old, new in retuned:
        actions.append(
            Action(
                ActionKind.UPDATE_VECTOR,
                vector=new,
                old=old,
                name=new.name,
                detail=_tuning_detail(old, new),
            )
        )
    reason = ""
    if removed or replaced:
        reason = "deletes the stored data of: " + ", ".join(
            [v.name for v in removed] + [new.name for _, new in replaced]
        )
    return Plan(collection, tuple(actions), fp, reason=reason, notes=tuple(notes))


def _recreate_detail(
    added: Sequence[VectorDef],
    removed: Sequence[VectorDef],
    replaced: Sequence[tuple[VectorDef, VectorDef]],
    retuned: Sequence[tuple[VectorDef, VectorDef]],
) -> str:
    parts = []
    if added:
        parts.append("add " + ", ".join(v.name for v in added))
    if removed:
        parts.append("remove " + ", ".join(v.name for v in removed))
    if replaced:
        parts.append("replace " + ", ".join(new.name for _, new in replaced))
    if retuned:
        parts.append("retune " + ", ".join(new.name for _, new in retuned))
    return "drop and recreate: " + ("; ".join(parts) if parts else "settings")


def _tuning_detail(old: VectorDef, new: VectorDef) -> str:
    changed = []
    if old.on_disk != new.on_disk:
        changed.append(f"onDisk {old.on_disk} -> {new.on_disk}")
    if old.hnsw != new.hnsw:
        changed.append(f"hnsw {dict(old.hnsw)} -> {dict(new.hnsw)}")
    if old.quantization != new.quantization:
        changed.append(f"quantization {dict(old.quantization)} -> {dict(new.quantization)}")
    return "; ".join(changed)


# --- approval -------------------------------------------------------------------------


class ApprovedBy(StrEnum):
    NOT_NEEDED = "not-needed"
    CONFIRM = "confirm"
    CONFIRM_PLAN = "confirmPlan"
    ANNOTATION = "annotation"


@dataclass(frozen=True)
class Approval:
    approved: bool
    by: ApprovedBy | None
    message: str


def needs_approval(plan: Plan, strategy: Strategy) -> bool:
    """Destructive plans need approval; under Recreate every change does (seed semantics);
    so does reverting a change made by hand (drift)."""
    if plan.empty:
        return False
    if plan.drift:
        return True
    if strategy is Strategy.RECREATE:
        return any(a.kind is not ActionKind.CREATE_COLLECTION for a in plan.actions)
    return plan.destructive


def approval(plan: Plan, spec: NamespaceSpec, annotation: str | None) -> Approval:
    """Whether `plan` may run now, and what approved it.

    - the one-shot annotation approves the plan whose fingerprint it holds;
    - `confirmPlan` approves exactly its fingerprint, whatever `confirm` says;
    - `confirm: true` without `confirmPlan` approves any plan (the seed's meaning).
    """
    if not needs_approval(plan, spec.strategy):
        return Approval(True, ApprovedBy.NOT_NEEDED, "")
    if annotation is not None and annotation == plan.fingerprint:
        return Approval(True, ApprovedBy.ANNOTATION, "approved once by annotation")
    if spec.confirm_plan is not None:
        if spec.confirm_plan == plan.fingerprint:
            return Approval(True, ApprovedBy.CONFIRM_PLAN, "approved by confirmPlan")
        return Approval(
            False,
            None,
            f"confirmPlan {spec.confirm_plan} does not match the pending plan {plan.fingerprint}",
        )
    if spec.confirm:
        return Approval(True, ApprovedBy.CONFIRM, "approved by confirm: true")
    return Approval(False, None, "")


# --- the seed's response --------------------------------------------------------------

NO_CHANGES_MESSAGE = "Qdrant collection already matches the deployed plugins. No changes needed."


def collections_fed_by(collections: Sequence[IngestionCollection], plugins: set[str]) -> list[str]:
    return [c.id for c in collections if plugins.intersection(c.plugins)]


def report(
    plan: Plan,
    desired: DesiredSchema,
    observed: ObservedCollection | None,
    spec: NamespaceSpec,
    *,
    time: str,
) -> LastReconfigure:
    """The seed's reconfigure response for `plan`, prepared before it runs."""
    previous = observed.points_count if observed is not None else 0
    all_ids = [c.id for c in spec.collections]
    if plan.empty:
        return LastReconfigure(
            status="no_changes_needed",
            previous_points_count=previous,
            vectors_added=[],
            vectors_total=desired.names,
            collections_to_reprocess=[],
            message=NO_CHANGES_MESSAGE,
            strategy=spec.strategy,
            plan_fingerprint=plan.fingerprint,
            time=time,
        )
    have = set(observed.names) if observed is not None else set()
    want = desired.by_name
    added = [n for n in desired.names if n not in have]
    removed = [n for n in (observed.names if observed else []) if n not in want]
    replaced = [a.name for a in plan.actions if a.kind is ActionKind.REPLACE_VECTOR]
    if plan.recreates:
        replaced = [
            n
            for n in desired.names
            if observed is not None
            and n in have
            and observed.by_name[n].structure != want[n].structure
        ]
    wipes_all = plan.recreates or any(a.kind is ActionKind.CREATE_COLLECTION for a in plan.actions)
    if wipes_all:
        points_deleted = previous
        reprocess = all_ids
    else:
        points_deleted = 0
        refill = set(added) | set(replaced)
        feeding = {p for name in refill for p in desired.origins.get(name, ())}
        reprocess = collections_fed_by(spec.collections, feeding)
    message = _message(
        added=added,
        removed=removed,
        replaced=replaced,
        points_deleted=points_deleted,
        recreated=plan.recreates,
        created=observed is None,
        reprocess=reprocess,
        retuned=[a.name for a in plan.actions if a.kind is ActionKind.UPDATE_VECTOR],
    )
    return LastReconfigure(
        status="reconfigured",
        previous_points_count=previous,
        vectors_added=added,
        vectors_total=desired.names,
        collections_to_reprocess=reprocess,
        message=message,
        vectors_removed=removed,
        vectors_replaced=replaced,
        points_deleted=points_deleted,
        strategy=spec.strategy,
        plan_fingerprint=plan.fingerprint,
        time=time,
    )


def _message(
    *,
    added: list[str],
    removed: list[str],
    replaced: list[str],
    points_deleted: int,
    recreated: bool,
    created: bool,
    reprocess: list[str],
    retuned: list[str],
) -> str:
    if created:
        head = f"Qdrant collection created with {len(added)} vector(s)."
    elif recreated:
        head = f"Qdrant collection reconfigured with {len(added)} new vector(s)."
    else:
        head = f"Qdrant collection changed in place: {len(added)} new vector(s)."
    parts = [head]
    if removed:
        parts.append(f"Removed vector(s): {', '.join(removed)}.")
    if replaced:
        parts.append(f"Re-created vector(s) with a new definition: {', '.join(replaced)}.")
    if retuned:
        parts.append(f"Tuned vector(s): {', '.join(retuned)}.")
    if recreated:
        parts.append(f"{points_deleted} points were deleted.")
    elif not created and (removed or replaced):
        parts.append("No points were deleted; only the data of those vectors is gone.")
    elif not created:
        parts.append("No points were deleted.")
    if reprocess:
        verb = "re-ingest data with the new vectors" if recreated else "fill the new vectors"
        parts.append(f"Re-trigger batches on the listed collections to {verb}.")
    return " ".join(parts)
