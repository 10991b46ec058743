"""Planning: a pure function from (desired, observed) to a typed plan of actions.

Nothing here does I/O. `resolve_desired` merges the plugins' vectors (or says which plugin
is missing or which two conflict); `make_plan` compares the desired schema with the live
collection and returns the actions that close the gap (`actions`), which ones are
destructive, and a fingerprint that identifies the plan for approval. `approval` decides
whether a destructive plan may run; `report` prepares the seed's reconfigure response.
The executor (`controller.executor`) performs the actions; unit tests cover this module
exhaustively without a cluster or a Qdrant.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from vectorschema.api import NamespaceSpec, PluginSpec, Strategy
from vectorschema.core.actions import (
    Action,
    AddVector,
    CreateCollection,
    Plan,
    RecreateCollection,
    RemoveVector,
    ReplaceVector,
    UpdateVector,
)
from vectorschema.core.schema import (
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
            "settings": desired.settings.wire(),
        },
        "observed": None
        if observed is None
        else {
            "vectors": sorted((v.canonical() for v in observed.vectors), key=lambda d: d["name"]),
            "settings": observed.settings.wire(),
        },
    }
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def make_plan(
    collection: str,
    desired: DesiredSchema,
    observed: ObservedCollection | None,
    *,
    strategy: Strategy,
    capabilities: Capabilities,
    last_applied: Sequence[str] | None = None,
    baseline_unknown: bool = False,
) -> Plan:
    """Compare desired with observed; return the actions that close the gap.

    `last_applied` is the vector names the operator last left live (its record on the
    collection, `core.ownership.drift_baseline`; never status, a tenant writes it). When
    the live names differ from them, someone changed the collection by hand: the plan
    that reverts it is marked `drift` and waits for approval like a destructive one. A
    collection deleted by hand is simply created again (nothing is left to lose).

    Only a difference the plan would revert counts: a vector gone that the spec still
    wants, or a vector there that the spec does not want as it is. A difference the spec
    agrees with is not reverted; it is also what the operator's own change leaves behind
    when its final status write was lost (a conflict storm, an API outage), which must
    not wait for a person.

    `baseline_unknown`: the collection is the operator's but it has no such record (made
    before the operator kept one): any change may revert one made by hand, so a plan that
    changes it is marked `drift` (approved once; the record is written after it).
    """
    plan = _make_plan(collection, desired, observed, strategy=strategy, capabilities=capabilities)
    if plan.empty or observed is None:
        return plan
    if last_applied is None:
        if not baseline_unknown:
            return plan
        why = (
            "the operator has no record of the vectors it last left on the collection (made "
            "before it kept one), so it cannot tell this change from one made by hand"
        )
        return replace(plan, drift=True, reason=f"{why}; {plan.reason}" if plan.reason else why)
    want, have = desired.by_name, observed.by_name
    gone = [n for n in last_applied if n not in have and n in want]
    extra = [
        n
        for n in observed.names
        if n not in last_applied and (n not in want or want[n].structure != have[n].structure)
    ]
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
        action: Action = CreateCollection(
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
        and not v.tuning_met_by(have[v.name])
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

    settings_changes = (
        observed.settings.changes_to(desired.settings)
        if capabilities.reports_cluster_settings
        else []
    )
    schema_change = bool(added or removed or replaced or retuned)
    if not schema_change and not settings_changes:
        return Plan(collection, (), fp, notes=tuple(notes))

    recreate_reason = ""
    if strategy is Strategy.RECREATE:
        recreate_reason = "strategy is Recreate: the collection is dropped and created again"
    elif settings_changes:
        # creation-only settings: a new collection, never a silent Ready
        recreate_reason = ", ".join(settings_changes) + " cannot change in place"
    elif (added or removed or replaced) and not capabilities.in_place_vectors:
        recreate_reason = (
            f"Qdrant {capabilities.server_version} cannot add or remove a named vector in place "
            f"(needs >= {'.'.join(map(str, IN_PLACE_VECTORS_SINCE))})"
        )
    if recreate_reason:
        action = RecreateCollection(
            vectors=desired.vectors,
            settings=desired.settings,
            dropped=tuple(observed.names),
            added=tuple(v.name for v in added),
            removed=tuple(v.name for v in removed),
            replaced=tuple(new.name for _, new in replaced),
            detail=_recreate_detail(added, removed, replaced, retuned),
        )
        return Plan(collection, (action,), fp, reason=recreate_reason, notes=tuple(notes))

    actions: list[Action] = []
    for v in removed:
        actions.append(RemoveVector(old=v, detail=f"remove {v.describe()}"))
    for old, new in replaced:
        actions.append(
            ReplaceVector(old=old, vector=new, detail=f"{old.describe()} -> {new.describe()}")
        )
    for v in added:
        actions.append(AddVector(vector=v, detail=v.describe()))
    for old, new in retuned:
        actions.append(UpdateVector(old=old, vector=new, detail=_tuning_detail(old, new)))
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
        changed.append(f"hnsw {old.hnsw.wire()} -> {new.hnsw.wire()}")
    if old.quantization != new.quantization:
        changed.append(f"quantization {old.quantization_wire()} -> {new.quantization_wire()}")
    return "; ".join(changed)
