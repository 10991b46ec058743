"""Pydantic models: the single source of truth for the CRDs and the status contract.

Every Kubernetes-facing field is camelCase (through an alias generator); Python code uses
snake_case. `make crds` turns these models into `crds/*.yaml` (see `crdgen.py`), so a
field added here is a field in the API. The models validate everything the CRD schema
and its CEL rules validate, so the CLI rejects bad input without a cluster, with the same
field path in the message.

This module is pure: no kopf, no qdrant_client, no kubernetes client.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from vectorschema import reasons

GROUP = "vectorschema.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
NAMESPACE_KIND = "Namespace"
NAMESPACE_PLURAL = "namespaces"
NAMESPACE_SINGULAR = "namespace"
NAMESPACE_SHORT = "vns"
PLUGIN_KIND = "Plugin"
PLUGIN_PLURAL = "plugins"
PLUGIN_SINGULAR = "plugin"
PLUGIN_SHORT = "vplugin"
CATEGORY = "vectorschema"
NAMESPACE_RESOURCE = f"{NAMESPACE_PLURAL}.{GROUP}"
PLUGIN_RESOURCE = f"{PLUGIN_PLURAL}.{GROUP}"

# Annotation that approves exactly one plan, once (removed by the operator after use).
CONFIRM_ANNOTATION = f"{GROUP}/confirm"
# Finalizer guarding the Qdrant collection of a Namespace.
FINALIZER = f"{GROUP}/collection"
# Keys stamped into the Qdrant collection's metadata.
OWNER_METADATA_KEY = f"{GROUP}/owner"
OWNER_UID_METADATA_KEY = f"{GROUP}/owner-uid"

# A Qdrant vector name or collection name we accept: letters, digits, '_', '-', '.'.
VECTOR_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$"
PLUGIN_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$"
FINGERPRINT_PATTERN = r"^[0-9a-f]{16}$"
MAX_DENSE_SIZE = 65536

# Schema-only annotations for the generated CRDs (see crdgen.py); pydantic ignores them
# when validating. A list-map refuses two items with the same key in the API server, as
# `_require_unique` does here; its keys must be required fields without defaults.
LIST_MAP_BY_NAME: JsonDict = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["name"],
}
LIST_MAP_BY_ID: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]}
LIST_MAP_BY_TYPE: JsonDict = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


def cel_rule(rule: str, message: str, field_path: str, reason: str) -> JsonDict:
    """One `x-kubernetes-validations` entry: the API server's twin of a model validator.

    `reason` is FieldValueRequired, FieldValueForbidden or FieldValueInvalid; `field_path`
    is relative to the object carrying the rule, so the error names the offending field.
    """
    return {"rule": rule, "message": message, "fieldPath": field_path, "reason": reason}


class CamelModel(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The Kubernetes representation: camelCase, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- vector definitions -------------------------------------------------------------


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


# --- Plugin -------------------------------------------------------------------------


class PluginSpec(CamelModel):
    """A reusable extractor definition: the named vectors it writes."""

    vectors: Annotated[
        list[VectorSpec],
        Field(
            min_length=1,
            max_length=64,
            description="Named vectors this plugin writes; each name at most once. A Namespace "
            "that lists the plugin gets these vectors in its Qdrant collection.",
            json_schema_extra=LIST_MAP_BY_NAME,
        ),
    ]

    @model_validator(mode="after")
    def _unique_names(self) -> PluginSpec:
        _require_unique([v.name for v in self.vectors], "vectors", "name")
        return self


# --- Namespace ----------------------------------------------------------------------


class Strategy(StrEnum):
    AUTO = "Auto"
    RECREATE = "Recreate"


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


class PluginRef(CamelModel):
    """A plugin deployed to the namespace: `{name}` refers to a cluster Plugin;
    `{name, vectors}` brings its vectors inline.
    """

    name: Annotated[
        str,
        Field(
            pattern=PLUGIN_NAME_PATTERN,
            max_length=253,
            description="Plugin name; refers to a cluster Plugin unless vectors are inline.",
        ),
    ]
    vectors: Annotated[
        list[VectorSpec] | None,
        Field(
            min_length=1,
            max_length=64,
            description="Inline vectors; when set, no Plugin resource is looked up. "
            "Each name at most once.",
            json_schema_extra=LIST_MAP_BY_NAME,
        ),
    ] = None

    @model_validator(mode="after")
    def _unique_names(self) -> PluginRef:
        if self.vectors is not None:
            _require_unique([v.name for v in self.vectors], "vectors", "name")
        return self


class IngestionCollection(CamelModel):
    """An ingestion collection of the namespace and the plugins that feed it."""

    id: Annotated[
        str,
        Field(min_length=1, max_length=253, description="Collection id, as the platform knows it."),
    ]
    plugins: Annotated[
        list[str],
        Field(max_length=64, description="Names of the plugins that feed this collection."),
    ] = Field(default_factory=list)


class SecretKeyRef(CamelModel):
    """A key of a Secret in the same Kubernetes namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253, description="Secret name.")]
    key: Annotated[str, Field(min_length=1, max_length=253, description="Key in the Secret.")]


class QdrantConnection(CamelModel):
    """Per-namespace Qdrant connection; unset means the operator's default."""

    url: Annotated[
        str | None,
        Field(pattern=r"^https?://", max_length=2048, description="Qdrant server URL."),
    ] = None
    api_key_secret_ref: Annotated[
        SecretKeyRef | None,
        Field(description="API key from a Secret in the same Kubernetes namespace."),
    ] = None


class NamespaceSpec(CamelModel):
    """The desired vector schema of one tenant namespace's Qdrant collection."""

    plugins: Annotated[
        list[PluginRef],
        Field(
            max_length=64,
            description="Plugins deployed to the namespace, each name at most once. The "
            "collection's named vectors are the union of the plugins' vectors; one vector name "
            "with two different definitions stalls the Namespace (PluginConflict) and nothing "
            "is touched.",
            json_schema_extra=LIST_MAP_BY_NAME,
        ),
    ] = Field(default_factory=list)
    collections: Annotated[
        list[IngestionCollection],
        Field(
            max_length=1024,
            description="Ingestion collections and the plugins feeding them, each id at most "
            "once; used for collectionsToReprocess.",
            json_schema_extra=LIST_MAP_BY_ID,
        ),
    ] = Field(default_factory=list)
    collection_name: Annotated[
        str | None,
        Field(
            pattern=COLLECTION_NAME_PATTERN,
            max_length=255,
            description="Qdrant collection name; default '<kubernetes namespace>_<name>'.",
        ),
    ] = None
    confirm: Annotated[bool, Field(description="Allow destructive plans (the seed's confirm).")] = (
        False
    )
    confirm_plan: Annotated[
        str | None,
        Field(
            pattern=FINGERPRINT_PATTERN,
            description="Approve only the destructive plan with this fingerprint.",
        ),
    ] = None
    strategy: Annotated[
        Strategy,
        Field(description="Auto: change in place where Qdrant can. Recreate: drop and recreate."),
    ] = Strategy.AUTO
    deletion_policy: Annotated[
        DeletionPolicy,
        Field(description="Retain (default) or Delete the collection with the resource."),
    ] = DeletionPolicy.RETAIN
    adopt: Annotated[
        bool,
        Field(description="Take over an existing collection that no resource owns."),
    ] = False
    qdrant: Annotated[
        QdrantConnection | None, Field(description="Qdrant connection for this namespace.")
    ] = None
    shard_number: Annotated[
        int | None, Field(ge=1, le=1024, description="Shards, set at creation.")
    ] = None
    replication_factor: Annotated[
        int | None, Field(ge=1, le=64, description="Replicas per shard, set at creation.")
    ] = None
    write_consistency_factor: Annotated[
        int | None, Field(ge=1, le=64, description="Replicas that must ack a write.")
    ] = None
    on_disk_payload: Annotated[
        bool | None, Field(description="Keep payloads on disk, set at creation.")
    ] = None

    @model_validator(mode="after")
    def _unique_names(self) -> NamespaceSpec:
        _require_unique([p.name for p in self.plugins], "plugins", "name")
        _require_unique([c.id for c in self.collections], "collections", "id")
        return self


def _require_unique(values: list[str], field: str, key: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{field}[{i}].{key}: duplicate value {value!r}")
        seen.add(value)


def default_collection_name(kube_namespace: str, name: str) -> str:
    """Collision-free across Kubernetes namespaces.

    Kubernetes namespace names are DNS labels and resource names DNS subdomains: neither
    may contain '_', so '<namespace>_<name>' is unique and valid for Qdrant.
    """
    result = f"{kube_namespace}_{name}"
    if not re.match(COLLECTION_NAME_PATTERN, result):
        raise ValueError(f"cannot derive a valid collection name from {result!r}")
    return result


# --- status -------------------------------------------------------------------------


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(CamelModel):
    """A Kubernetes condition (API conventions, kstatus-compatible)."""

    type: Annotated[str, Field(description="Ready, Reconciling or Stalled.")]
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


class Operation(CamelModel):
    """Intent recorded before a destructive step, so a crash mid-way resumes and finishes.

    `result` is the `lastReconfigure` the operation will report once done, prepared before
    the first write (it needs the points count from before the change).
    """

    plan_fingerprint: Annotated[str, Field(description="Fingerprint of the plan being applied.")]
    started: Annotated[str, Field(description="When it started (RFC 3339, UTC).")]
    actions: Annotated[list[PlannedAction], Field(description="The steps being applied.")]
    result: Annotated[
        LastReconfigure, Field(description="The lastReconfigure to report once done.")
    ]


CONDITION_TYPES = ("Ready", "Reconciling", "Stalled")


class NamespaceStatus(CamelModel):
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

    def set_live(self, points_count: int | None, vectors: list[str] | None) -> None:
        """Record what the live collection looks like (None: not known)."""
        self.points_count = points_count
        self.vectors = vectors
        self.vector_count = None if vectors is None else len(vectors)

    # -- condition transitions ------------------------------------------------------

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def set_condition(
        self,
        type_: str,
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
            old.last_transition_time if old is not None and old.status == status else _ts(now)
        )
        new = Condition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=transition,
            observed_generation=generation,
        )
        others = [c for c in self.conditions if c.type != type_]
        self.conditions = sorted([*others, new], key=_condition_order)

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
            ("Ready", ready),
            ("Reconciling", reconciling),
            ("Stalled", stalled),
        ):
            self.set_condition(type_, status, reason, message, generation=generation, now=now)

    def set_ready(self, message: str, *, generation: int | None, now: datetime) -> None:
        F = ConditionStatus.FALSE
        self._set_all(
            ready=(ConditionStatus.TRUE, reasons.RECONCILED, message),
            reconciling=(F, reasons.RECONCILED, ""),
            stalled=(F, reasons.RECONCILED, ""),
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

    def set_awaiting_confirmation(
        self, message: str, *, generation: int | None, now: datetime
    ) -> None:
        """Waiting for a person: not progressing, not stalled by an error, not ready."""
        F = ConditionStatus.FALSE
        reason = reasons.AWAITING_CONFIRMATION
        self._set_all(
            ready=(F, reason, message),
            reconciling=(F, reason, ""),
            stalled=(F, reason, ""),
            generation=generation,
            now=now,
        )


def _condition_order(c: Condition) -> int:
    return CONDITION_TYPES.index(c.type) if c.type in CONDITION_TYPES else len(CONDITION_TYPES)


def _ts(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC, second precision, as Kubernetes writes times."""
    return _ts(now)


class PluginStatus(CamelModel):
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


# --- whole resources (for the CLI and for CRD generation) ----------------------------


class ObjectMeta(BaseModel):
    """The part of metadata the operator reads."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    annotations: dict[str, str] = Field(default_factory=dict)


class NamespaceResource(BaseModel):
    """The vector schema of a tenant namespace's Qdrant collection, kept in line with the
    plugins deployed to it. The kind clashes with core v1 Namespace: use the short name
    `vns` or the full name `namespaces.vectorschema.dev` with kubectl."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)

    api_version: Literal["vectorschema.dev/v1alpha1"] = "vectorschema.dev/v1alpha1"
    kind: Literal["Namespace"] = "Namespace"
    metadata: ObjectMeta
    spec: NamespaceSpec = Field(default_factory=NamespaceSpec)
    status: NamespaceStatus | None = None

    @model_validator(mode="after")
    def _collection_name_derivable(self) -> NamespaceResource:
        if self.spec.collection_name is None:
            try:
                default_collection_name(self.kube_namespace, self.metadata.name)
            except ValueError as exc:
                raise ValueError(
                    f"metadata.name: {exc} (valid: {COLLECTION_NAME_PATTERN}); "
                    "set spec.collectionName"
                ) from None
        return self

    @property
    def kube_namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def collection_name(self) -> str:
        return self.spec.collection_name or default_collection_name(
            self.kube_namespace, self.metadata.name
        )

    @property
    def owner_id(self) -> str:
        return f"{self.kube_namespace}/{self.metadata.name}"


class PluginResource(BaseModel):
    """A reusable plugin (embedding extractor) definition: the named vectors it writes.
    Namespaces refer to it by name in spec.plugins."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)

    api_version: Literal["vectorschema.dev/v1alpha1"] = "vectorschema.dev/v1alpha1"
    kind: Literal["Plugin"] = "Plugin"
    metadata: ObjectMeta
    spec: PluginSpec
    status: PluginStatus | None = None
