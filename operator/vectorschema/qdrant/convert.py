"""Pure conversions between vectorschema's `VectorDef` and qdrant-client's models.

Observed schemas are normalised exactly like `core.schema.vector_def_from_spec`
normalises desired ones (enum casing, `datatype None` = float32, empty HNSW diff =
defaults), so "spec -> create -> observe" gives equal `VectorDef`s and an unchanged
collection plans to nothing. No I/O: unit tests cover both directions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from qdrant_client import models as qm

from vectorschema.api import Datatype, Distance, SparseModifier, VectorType
from vectorschema.api.base import to_camel
from vectorschema.core.schema import (
    CollectionSettings,
    Hnsw,
    ObservedCollection,
    Quantization,
    VectorDef,
)
from vectorschema.qdrant.errors import GatewayError, QdrantRejected

# Sparse vectors have no HNSW graph; their inverted index has these two of the settings.
SPARSE_INDEX_FIELDS = ("full_scan_threshold", "on_disk")
_SPARSE_INDEX_KEYS = {to_camel(f) for f in SPARSE_INDEX_FIELDS}

# --- VectorDef -> qdrant-client ------------------------------------------------------


def distance(v: VectorDef) -> qm.Distance:
    if v.size is None or v.distance is None:
        raise QdrantRejected(f"vector {v.name!r}: {v.type.value} vectors need a size and distance")
    return qm.Distance(v.distance.value)


def storage_datatype(datatype: Datatype) -> qm.VectorStorageDatatype | None:
    # float32 is Qdrant's default: leave it unset, as a collection made by hand would be.
    return None if datatype is Datatype.FLOAT32 else qm.VectorStorageDatatype(datatype.value)


def datatype(value: Datatype) -> qm.Datatype | None:
    return None if value is Datatype.FLOAT32 else qm.Datatype(value.value)


def modifier(value: SparseModifier) -> qm.Modifier | None:
    return None if value is SparseModifier.NONE else qm.Modifier(value.value)


def multivector(v: VectorDef) -> qm.MultiVectorConfig | None:
    if v.type is VectorType.MULTIDENSE:
        return qm.MultiVectorConfig(comparator=qm.MultiVectorComparator.MAX_SIM)
    return None


def hnsw(v: VectorDef) -> qm.HnswConfigDiff | None:
    # Hnsw's field names are qdrant-client's (m, ef_construct, full_scan_threshold, on_disk).
    return qm.HnswConfigDiff(**v.hnsw.set_fields()) if v.hnsw else None


def quantization(v: VectorDef) -> qm.QuantizationConfig | None:
    q = v.quantization
    if q is None:
        return None
    if q.type == "scalar":
        return qm.ScalarQuantization(
            scalar=qm.ScalarQuantizationConfig(
                type=qm.ScalarType.INT8, quantile=q.quantile, always_ram=q.always_ram
            )
        )
    if q.type == "binary":
        return qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig(always_ram=q.always_ram))
    if q.type == "product" and q.compression is not None:
        return qm.ProductQuantization(
            product=qm.ProductQuantizationConfig(
                compression=qm.CompressionRatio(q.compression), always_ram=q.always_ram
            )
        )
    raise QdrantRejected(f"vector {v.name!r}: unsupported quantization {q.wire()!r}")


def sparse_index(v: VectorDef, *, with_datatype: bool) -> qm.SparseIndexParams | None:
    if v.on_disk is not None or v.quantization is not None:
        raise QdrantRejected(f"vector {v.name!r}: sparse vectors take no onDisk or quantization")
    unsupported = sorted(k for k in v.hnsw.wire() if k not in _SPARSE_INDEX_KEYS)
    if unsupported:
        raise QdrantRejected(
            f"vector {v.name!r}: sparse vectors have no HNSW graph, "
            f"only fullScanThreshold and onDisk apply (not {', '.join(unsupported)})"
        )
    fields: dict[str, Any] = v.hnsw.set_fields()
    if with_datatype:
        fields["datatype"] = datatype(v.datatype)
    fields = {k: value for k, value in fields.items() if value is not None}
    return qm.SparseIndexParams(**fields) if fields else None


def vector_params(v: VectorDef) -> qm.VectorParams:
    return qm.VectorParams(
        size=v.size or 0,
        distance=distance(v),
        datatype=datatype(v.datatype),
        on_disk=v.on_disk,
        hnsw_config=hnsw(v),
        quantization_config=quantization(v),
        multivector_config=multivector(v),
    )


def sparse_params(v: VectorDef) -> qm.SparseVectorParams:
    return qm.SparseVectorParams(
        modifier=modifier(v.modifier), index=sparse_index(v, with_datatype=True)
    )


def check_vectors(vectors: Sequence[VectorDef]) -> None:
    """Convert every vector as a write would, before any write: raises QdrantRejected for
    settings Qdrant cannot take (say `hnsw.m` on a sparse vector), so a plan that would
    fail half-way is refused before its first step."""
    for v in vectors:
        if v.type is VectorType.SPARSE:
            sparse_params(v)
        else:
            vector_params(v)


def vector_name_config(v: VectorDef) -> qm.VectorNameConfig:
    """The structure of a vector created in place (tuning is applied after it)."""
    if v.type is VectorType.SPARSE:
        return qm.SparseVectorNameConfig(
            sparse=qm.SparseVectorConfig(
                modifier=modifier(v.modifier), datatype=storage_datatype(v.datatype)
            )
        )
    return qm.DenseVectorNameConfig(
        dense=qm.DenseVectorConfig(
            size=v.size or 0,
            distance=distance(v),
            multivector_config=multivector(v),
            datatype=storage_datatype(v.datatype),
        )
    )


# --- qdrant-client -> VectorDef ------------------------------------------------------


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def _datatype(value: Any, where: str) -> Datatype:
    if value is None:
        return Datatype.FLOAT32
    raw = _enum_value(value)
    try:
        return Datatype(raw)
    except ValueError:
        raise GatewayError(
            f"{where} uses datatype {raw}, which vectorschema does not manage"
        ) from None


def _hnsw(h: qm.HnswConfigDiff | qm.SparseIndexParams | None) -> Hnsw:
    if h is None:
        return Hnsw()
    if isinstance(h, qm.SparseIndexParams):
        return Hnsw(full_scan_threshold=h.full_scan_threshold, on_disk=h.on_disk)
    return Hnsw(
        m=h.m,
        ef_construct=h.ef_construct,
        full_scan_threshold=h.full_scan_threshold,
        on_disk=h.on_disk,
    )


def _quantization(q: qm.QuantizationConfig | None) -> Quantization | None:
    if q is None:
        return None
    if isinstance(q, qm.ScalarQuantization):
        return Quantization(
            type="scalar", quantile=q.scalar.quantile, always_ram=q.scalar.always_ram
        )
    if isinstance(q, qm.BinaryQuantization):
        return Quantization(type="binary", always_ram=q.binary.always_ram)
    if isinstance(q, qm.ProductQuantization):
        return Quantization(
            type="product",
            compression=_enum_value(q.product.compression),
            always_ram=q.product.always_ram,
        )
    # Kinds vectorschema cannot ask for (turbo, ...): shown as such, so a plan replaces them.
    dumped = q.model_dump(mode="json", exclude_none=True)
    return Quantization(type=next(iter(dumped), "unknown"))


def dense_def(name: str, p: qm.VectorParams, collection: str) -> VectorDef:
    on_disk = p.on_disk
    if on_disk is None and p.memory is qm.Memory.COLD:
        on_disk = True  # newer servers may report the placement instead of the flag
    return VectorDef(
        name=name,
        type=VectorType.MULTIDENSE if p.multivector_config is not None else VectorType.DENSE,
        size=p.size,
        distance=Distance(_enum_value(p.distance)),
        datatype=_datatype(p.datatype, f"collection {collection!r}, vector {name!r}"),
        on_disk=on_disk,
        hnsw=_hnsw(p.hnsw_config),
        quantization=_quantization(p.quantization_config),
    )


def sparse_def(name: str, p: qm.SparseVectorParams, collection: str) -> VectorDef:
    index = p.index
    value = _enum_value(p.modifier) if p.modifier is not None else SparseModifier.NONE.value
    return VectorDef(
        name=name,
        type=VectorType.SPARSE,
        datatype=_datatype(
            index.datatype if index else None, f"collection {collection!r}, vector {name!r}"
        ),
        modifier=SparseModifier(value),
        hnsw=_hnsw(index),
    )


def observed(
    collection: str,
    info: qm.CollectionInfo,
    *,
    metadata: Mapping[str, Any],
    datatypes: Mapping[str, Any],
) -> ObservedCollection:
    """The live collection; `datatypes` overrides the datatypes Qdrant did not keep (the
    local-mode shim of `local.split_datatypes`)."""
    params = info.config.params
    vectors: list[VectorDef] = []
    dense = params.vectors
    if isinstance(dense, qm.VectorParams):
        dense = {"": dense}
    for name, p in (dense or {}).items():
        if p.datatype is None and name in datatypes:
            p = p.model_copy(update={"datatype": qm.Datatype(datatypes[name])})
        vectors.append(dense_def(name, p, collection))
    for name, sp in (params.sparse_vectors or {}).items():
        if (sp.index is None or sp.index.datatype is None) and name in datatypes:
            index = sp.index or qm.SparseIndexParams()
            index = index.model_copy(update={"datatype": qm.Datatype(datatypes[name])})
            sp = sp.model_copy(update={"index": index})
        vectors.append(sparse_def(name, sp, collection))
    return ObservedCollection(
        name=collection,
        vectors=tuple(vectors),
        points_count=info.points_count or 0,
        metadata=dict(metadata),
        settings=CollectionSettings(
            shard_number=params.shard_number,
            replication_factor=params.replication_factor,
            write_consistency_factor=params.write_consistency_factor,
            on_disk_payload=params.on_disk_payload,
        ),
    )


def parse_version(version: str) -> tuple[int, int] | None:
    match = re.match(r"\s*v?(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None
