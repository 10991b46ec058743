"""Vector definitions as a plugin brings them (`spec.vectors[]`), with their CEL twins.

Imports only pydantic and the api base.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from vectorschema.api.base import CamelModel, cel_rule
from vectorschema.api.constants import MAX_DENSE_SIZE, VECTOR_NAME_PATTERN


class VectorType(StrEnum):
    DENSE = "dense"
    SPARSE = "sparse"
    MULTIDENSE = "multidense"


class Distance(StrEnum):
    COSINE = "Cosine"
    DOT = "Dot"
    EUCLID = "Euclid"
    MANHATTAN = "Manhattan"


class Datatype(StrEnum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    UINT8 = "uint8"


class SparseModifier(StrEnum):
    NONE = "none"
    IDF = "idf"


class QuantizationType(StrEnum):
    SCALAR = "scalar"
    BINARY = "binary"
    PRODUCT = "product"


class HnswSpec(CamelModel):
    """Per-vector HNSW index settings; unset fields keep the collection's defaults."""

    m: Annotated[int | None, Field(ge=0, le=1024, description="Edges per node.")] = None
    ef_construct: Annotated[
        int | None, Field(ge=4, le=65536, description="Neighbours considered while building.")
    ] = None
    full_scan_threshold: Annotated[
        int | None, Field(ge=0, description="Below this many KB of vectors, search is exact.")
    ] = None
    on_disk: Annotated[bool | None, Field(description="Keep the HNSW graph on disk.")] = None


class QuantizationSpec(CamelModel):
    """Per-vector quantization. `scalar` uses int8, `product` needs `compression`."""

    # The API server's twin of `_check_kind`.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "self.type != 'product' || has(self.compression)",
                    "compression is required when type is product",
                    ".compression",
                    "FieldValueRequired",
                ),
                cel_rule(
                    "self.type == 'product' || !has(self.compression)",
                    "compression is only allowed when type is product",
                    ".compression",
                    "FieldValueForbidden",
                ),
                cel_rule(
                    "self.type == 'scalar' || !has(self.quantile)",
                    "quantile is only allowed when type is scalar",
                    ".quantile",
                    "FieldValueForbidden",
                ),
            ]
        }
    )

    type: Annotated[QuantizationType, Field(description="scalar, binary or product.")]
    always_ram: Annotated[bool | None, Field(description="Keep quantized vectors in RAM.")] = None
    quantile: Annotated[
        float | None, Field(ge=0.5, le=1.0, description="Scalar only: quantile for bounds.")
    ] = None
    compression: Annotated[
        Literal["x4", "x8", "x16", "x32", "x64"] | None,
        Field(description="Product only: compression ratio."),
    ] = None

    @model_validator(mode="after")
    def _check_kind(self) -> QuantizationSpec:
        if self.type is QuantizationType.PRODUCT and self.compression is None:
            raise ValueError("compression is required when type is product")
        if self.type is not QuantizationType.PRODUCT and self.compression is not None:
            raise ValueError("compression is only allowed when type is product")
        if self.type is not QuantizationType.SCALAR and self.quantile is not None:
            raise ValueError("quantile is only allowed when type is scalar")
        return self


class VectorSpec(CamelModel):
    """One named vector of a Qdrant collection, as a plugin brings it."""

    # The API server's twin of `_check_type_fields`. `type` always has a value there: the
    # API server fills its default before validating.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "self.type == 'sparse' || has(self.size)",
                    "size is required for dense and multidense vectors",
                    ".size",
                    "FieldValueRequired",
                ),
                cel_rule(
                    "self.type != 'sparse' || !has(self.size)",
                    "size is not allowed for sparse vectors",
                    ".size",
                    "FieldValueForbidden",
                ),
                cel_rule(
                    "self.type == 'sparse' || has(self.distance)",
                    "distance is required for dense and multidense vectors",
                    ".distance",
                    "FieldValueRequired",
                ),
                cel_rule(
                    "self.type != 'sparse' || !has(self.distance)",
                    "distance is not allowed for sparse vectors",
                    ".distance",
                    "FieldValueForbidden",
                ),
                cel_rule(
                    "self.type == 'sparse' || !has(self.modifier)",
                    "modifier is only allowed for sparse vectors",
                    ".modifier",
                    "FieldValueForbidden",
                ),
                cel_rule(
                    "self.type != 'sparse' || !has(self.onDisk)",
                    "onDisk is not allowed for sparse vectors",
                    ".onDisk",
                    "FieldValueForbidden",
                ),
                cel_rule(
                    "self.type != 'sparse' || !has(self.quantization)",
                    "quantization is not allowed for sparse vectors",
                    ".quantization",
                    "FieldValueForbidden",
                ),
                cel_rule(
                    "self.type != 'sparse' || !has(self.datatype) || self.datatype != 'uint8'",
                    "datatype uint8 is not allowed for sparse vectors",
                    ".datatype",
                    "FieldValueInvalid",
                ),
            ]
        }
    )

    name: Annotated[
        str,
        Field(
            pattern=VECTOR_NAME_PATTERN,
            max_length=128,
            description="Qdrant vector name, unique within the collection.",
        ),
    ]
    type: Annotated[
        VectorType, Field(description="dense, sparse or multidense (late interaction).")
    ] = VectorType.DENSE
    size: Annotated[
        int | None,
        Field(
            ge=1,
            le=MAX_DENSE_SIZE,
            description="Dimensions. Required for dense and multidense, forbidden for sparse.",
        ),
    ] = None
    distance: Annotated[
        Distance | None,
        Field(description="Cosine, Dot, Euclid or Manhattan. Required unless sparse."),
    ] = None
    datatype: Annotated[
        Datatype | None,
        Field(description="Storage datatype: float32 (default), float16 or uint8."),
    ] = None
    modifier: Annotated[
        SparseModifier | None,
        Field(description="Sparse only: 'idf' to weight by inverse document frequency."),
    ] = None
    on_disk: Annotated[
        bool | None, Field(description="Dense/multidense only: keep vectors on disk (mmap).")
    ] = None
    hnsw: Annotated[HnswSpec | None, Field(description="HNSW index settings.")] = None
    quantization: Annotated[
        QuantizationSpec | None, Field(description="Quantization settings.")
    ] = None

    @model_validator(mode="after")
    def _check_type_fields(self) -> VectorSpec:
        if self.type is VectorType.SPARSE:
            for field in ("size", "distance", "on_disk", "quantization"):
                if getattr(self, field) is not None:
                    raise ValueError(f"{to_camel(field)} is not allowed for sparse vectors")
            if self.datatype is Datatype.UINT8:
                raise ValueError("datatype uint8 is not allowed for sparse vectors")
        else:
            if self.size is None:
                raise ValueError(f"size is required for {self.type.value} vectors")
            if self.distance is None:
                raise ValueError(f"distance is required for {self.type.value} vectors")
            if self.modifier is not None:
                raise ValueError("modifier is only allowed for sparse vectors")
        return self
