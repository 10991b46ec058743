"""Normalised vector schemas: the common language of desired and observed collections.

The spec (`api.VectorSpec`) and Qdrant's `VectorParams` say the same thing in
different ways (enum casing, `datatype None` meaning float32, an empty HNSW diff meaning
"defaults"). Both are turned into a `VectorDef` here (spec side) or in
`qdrant.convert` (Qdrant side) so planning compares like with like.

The wire (camelCase) keys of the tuning values are not spelled here: they are the field
names through the API's own alias generator (`to_camel`), as in the CRD.

Pure data: no kopf, no qdrant_client.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from vectorschema.api import (
    Datatype,
    Distance,
    NamespaceSpec,
    SparseModifier,
    VectorSpec,
    VectorType,
)
from vectorschema.api.base import to_camel

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def wire(value: DataclassInstance, *, keep_none: bool = False) -> dict[str, Any]:
    """A dataclass as its camelCase document, keys sorted; None fields left out."""
    doc = {camel: getattr(value, name) for name, camel in _wire_names(type(value))}
    return {k: v for k, v in doc.items() if keep_none or v is not None}


@functools.cache
def _wire_names(cls: type[DataclassInstance]) -> tuple[tuple[str, str], ...]:
    """(field name, camelCase key) of a dataclass, sorted by key: computed once per class
    (`to_camel` is a few regular expressions; a plan's fingerprint calls `wire` for every
    vector of both sides, and this was 60% of `make_plan`'s time)."""
    return tuple(sorted(((f.name, to_camel(f.name)) for f in fields(cls)), key=lambda p: p[1]))


@dataclass(frozen=True)
class Hnsw:
    """Per-vector HNSW settings (dense), or inverted-index settings (sparse: only
    `full_scan_threshold` and `on_disk` apply). Unset means the collection's default."""

    m: int | None = None
    ef_construct: int | None = None
    full_scan_threshold: int | None = None
    on_disk: bool | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in self.set_fields().values())

    def set_fields(self) -> dict[str, Any]:
        """The settings that are set, by field name (qdrant-client spells them alike)."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }

    def wire(self) -> dict[str, Any]:
        return wire(self)


@dataclass(frozen=True)
class Quantization:
    """Per-vector quantization. `type` is a string, not `QuantizationType`: a live
    collection may use a kind vectorschema cannot ask for, which is shown as such."""

    type: str
    always_ram: bool | None = None
    quantile: float | None = None
    compression: str | None = None

    def wire(self) -> dict[str, Any]:
        return wire(self)


@dataclass(frozen=True)
class VectorDef:
    """One named vector, normalised.

    `structure` is what Qdrant cannot change in place (type, size, distance, datatype,
    multivector, sparse modifier); its tuning (on-disk, HNSW, quantization) is what
    `update_collection` can change, compared by `tuning_met_by`.
    """

    name: str
    type: VectorType
    size: int | None = None
    distance: Distance | None = None
    datatype: Datatype = Datatype.FLOAT32
    modifier: SparseModifier = SparseModifier.NONE
    on_disk: bool | None = None
    hnsw: Hnsw = field(default_factory=Hnsw)
    quantization: Quantization | None = None

    @property
    def structure(self) -> tuple[Any, ...]:
        return (self.type, self.size, self.distance, self.datatype, self.modifier)

    def tuning_met_by(self, live: VectorDef) -> bool:
        """Whether `live`'s tuning is what this (desired) vector asks for.

        An unset on-disk flag or HNSW setting is no opinion: Qdrant keeps such a setting
        once given and has no way to drop a per-vector override (a real 1.18 server keeps
        `m` after an empty HNSW diff), so asking for "unset" would re-plan the same update
        on every pass. Quantization is exact: it can be disabled.
        """
        if self.on_disk is not None and live.on_disk != self.on_disk:
            return False
        have = live.hnsw.set_fields()
        if any(have.get(k) != v for k, v in self.hnsw.set_fields().items()):
            return False
        return live.quantization == self.quantization

    @property
    def has_tuning(self) -> bool:
        return self.on_disk is not None or bool(self.hnsw) or self.quantization is not None

    def quantization_wire(self) -> dict[str, Any]:
        return {} if self.quantization is None else self.quantization.wire()

    def describe(self) -> str:
        if self.type is VectorType.SPARSE:
            extra = "" if self.modifier is SparseModifier.NONE else f", {self.modifier.value}"
            return f"sparse, {self.datatype.value}{extra}"
        distance = self.distance.value if self.distance else "?"
        return f"{self.type.value} {self.size}, {distance}, {self.datatype.value}"

    def canonical(self) -> dict[str, Any]:
        """A JSON-able, order-independent form (for fingerprints)."""
        return {
            "name": self.name,
            "type": self.type.value,
            "size": self.size,
            "distance": self.distance.value if self.distance else None,
            "datatype": self.datatype.value,
            "modifier": self.modifier.value,
            "onDisk": self.on_disk,
            "hnsw": self.hnsw.wire(),
            "quantization": self.quantization_wire(),
        }


def vector_def_from_spec(spec: VectorSpec) -> VectorDef:
    h, q = spec.hnsw, spec.quantization
    return VectorDef(
        name=spec.name,
        type=spec.type,
        size=spec.size,
        distance=spec.distance,
        datatype=spec.datatype or Datatype.FLOAT32,
        modifier=spec.modifier or SparseModifier.NONE,
        on_disk=spec.on_disk,
        hnsw=Hnsw()
        if h is None
        else Hnsw(
            m=h.m,
            ef_construct=h.ef_construct,
            full_scan_threshold=h.full_scan_threshold,
            on_disk=h.on_disk,
        ),
        quantization=None
        if q is None
        else Quantization(
            type=q.type.value,
            always_ram=q.always_ram,
            quantile=q.quantile,
            compression=q.compression,
        ),
    )


@dataclass(frozen=True)
class CollectionSettings:
    """Collection-level settings a user sets at creation, and only then: a change of one
    means a new collection (see `changes_to`)."""

    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None
    on_disk_payload: bool | None = None

    @classmethod
    def from_spec(cls, spec: NamespaceSpec) -> CollectionSettings:
        return cls(
            shard_number=spec.shard_number,
            replication_factor=spec.replication_factor,
            write_consistency_factor=spec.write_consistency_factor,
            on_disk_payload=spec.on_disk_payload,
        )

    def wire(self) -> dict[str, Any]:
        """camelCase, unset settings kept as null (for fingerprints)."""
        return wire(self, keep_none=True)

    def changes_to(self, desired: CollectionSettings) -> list[str]:
        """What differs, as `"shardNumber 1 -> 2"`: only settings `desired` sets and this
        (observed) side knows; unset means "whatever the collection has"."""
        have, want = self.wire(), desired.wire()
        return [
            f"{name} {have[name]} -> {want[name]}".replace("True", "true").replace("False", "false")
            for name in want
            if want[name] is not None and have[name] is not None and want[name] != have[name]
        ]


@dataclass(frozen=True)
class DesiredSchema:
    """What the namespace's plugins ask for.

    `vectors` keeps plugin order (first plugin first); `origins` maps each vector name to
    the plugins that bring it (several, when identical definitions were merged).
    """

    vectors: tuple[VectorDef, ...]
    origins: Mapping[str, tuple[str, ...]]
    settings: CollectionSettings = field(default_factory=CollectionSettings)

    @property
    def by_name(self) -> dict[str, VectorDef]:
        return {v.name: v for v in self.vectors}

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.vectors]


#: Qdrant can create and delete a named vector on a live collection since this version.
IN_PLACE_VECTORS_SINCE = (1, 18)


@dataclass(frozen=True)
class Capabilities:
    """What the Qdrant behind a gateway can do.

    `in_place_vectors`: create/delete a named vector on a live collection (server >= 1.18).
    `tunes_vectors`: `update_collection` really applies per-vector hnsw/quantization/on-disk
    (local mode accepts and ignores them). `reports_cluster_settings`: the observed
    shard/replication settings are real (local mode reports defaults).
    """

    server_version: str = "unknown"
    in_place_vectors: bool = True
    tunes_vectors: bool = True
    reports_cluster_settings: bool = True


@dataclass(frozen=True)
class ObservedCollection:
    """The live collection, from one read (`get_collection`)."""

    name: str
    vectors: tuple[VectorDef, ...]
    points_count: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    settings: CollectionSettings = field(default_factory=CollectionSettings)

    @property
    def by_name(self) -> dict[str, VectorDef]:
        return {v.name: v for v in self.vectors}

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.vectors]
