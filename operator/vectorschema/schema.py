"""Normalised vector schemas: the common language of desired and observed collections.

The spec (`models.VectorSpec`) and Qdrant's `VectorParams` say the same thing in
different ways (enum casing, `datatype None` meaning float32, an empty HNSW diff meaning
"defaults"). Both are turned into a `VectorDef` here (spec side) or in the gateway (Qdrant
side) so planning compares like with like.

Pure data: no kopf, no qdrant_client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vectorschema.models import (
    Datatype,
    Distance,
    NamespaceSpec,
    SparseModifier,
    VectorSpec,
    VectorType,
)


@dataclass(frozen=True)
class VectorDef:
    """One named vector, normalised.

    `structure` is what Qdrant cannot change in place (type, size, distance, datatype,
    multivector, sparse modifier); `tuning` is what `update_collection` can change
    (on-disk, HNSW, quantization), as sorted items so the whole is hashable.
    """

    name: str
    type: VectorType
    size: int | None = None
    distance: Distance | None = None
    datatype: Datatype = Datatype.FLOAT32
    modifier: SparseModifier = SparseModifier.NONE
    on_disk: bool | None = None
    hnsw: tuple[tuple[str, Any], ...] = ()
    quantization: tuple[tuple[str, Any], ...] = ()

    @property
    def structure(self) -> tuple[Any, ...]:
        return (self.type, self.size, self.distance, self.datatype, self.modifier)

    @property
    def tuning(self) -> tuple[Any, ...]:
        return (self.on_disk, self.hnsw, self.quantization)

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
            "hnsw": dict(self.hnsw),
            "quantization": dict(self.quantization),
        }


def _items(d: Mapping[str, Any] | None) -> tuple[tuple[str, Any], ...]:
    if not d:
        return ()
    return tuple(sorted((k, v) for k, v in d.items() if v is not None))


def vector_def_from_spec(spec: VectorSpec) -> VectorDef:
    return VectorDef(
        name=spec.name,
        type=spec.type,
        size=spec.size,
        distance=spec.distance,
        datatype=spec.datatype or Datatype.FLOAT32,
        modifier=spec.modifier or SparseModifier.NONE,
        on_disk=spec.on_disk,
        hnsw=_items(spec.hnsw.model_dump(by_alias=True) if spec.hnsw else None),
        quantization=_items(
            spec.quantization.model_dump(mode="json", by_alias=True) if spec.quantization else None
        ),
    )


@dataclass(frozen=True)
class CollectionSettings:
    """Collection-level settings a user sets at creation."""

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
