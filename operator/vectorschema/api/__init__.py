"""The CRD contract: what Kubernetes users write and read, in pure pydantic.

Holds the API constants (group, version, plurals, annotation and metadata keys), the
vector, Plugin and Namespace specs with the CEL twins of their validators, the status
models with their condition transitions, and the condition and Event reasons. The CRD
generator (`vectorschema.crdgen`) reads only this package.

May import: pydantic and the standard library. Never kopf, qdrant_client or kubernetes,
and nothing else of vectorschema.
"""

from __future__ import annotations

from vectorschema.api.base import CamelModel, cel_rule
from vectorschema.api.conditions import (
    CONDITION_TYPES,
    Condition,
    ConditionStatus,
    ConditionType,
    timestamp,
)
from vectorschema.api.constants import (
    API_VERSION,
    CATEGORY,
    COLLECTION_NAME_PATTERN,
    CONFIRM_ANNOTATION,
    FINALIZER,
    FINGERPRINT_PATTERN,
    GROUP,
    MAX_DENSE_SIZE,
    NAMESPACE_KIND,
    NAMESPACE_PLURAL,
    NAMESPACE_RESOURCE,
    NAMESPACE_SHORT,
    NAMESPACE_SINGULAR,
    OWNER_METADATA_KEY,
    OWNER_UID_METADATA_KEY,
    PLUGIN_KIND,
    PLUGIN_NAME_PATTERN,
    PLUGIN_PLURAL,
    PLUGIN_RESOURCE,
    PLUGIN_SHORT,
    PLUGIN_SINGULAR,
    RETAINED_BY_METADATA_KEY,
    RETAINED_UID_METADATA_KEY,
    VECTOR_NAME_PATTERN,
    VERSION,
)
from vectorschema.api.namespace import (
    DeletionPolicy,
    IngestionCollection,
    NamespaceSpec,
    PluginRef,
    QdrantConnection,
    SecretKeyRef,
    Strategy,
    default_collection_name,
)
from vectorschema.api.plugin import PluginSpec
from vectorschema.api.reasons import EventReason, Reason
from vectorschema.api.resources import NamespaceResource, ObjectMeta, PluginResource
from vectorschema.api.status import (
    ActionKind,
    LastReconfigure,
    NamespaceStatus,
    Operation,
    OperationStep,
    PlannedAction,
    PlanStatus,
    PluginStatus,
)
from vectorschema.api.validation import describe, field_path
from vectorschema.api.vectors import (
    Datatype,
    Distance,
    HnswSpec,
    QuantizationSpec,
    QuantizationType,
    SparseModifier,
    VectorSpec,
    VectorType,
)

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "COLLECTION_NAME_PATTERN",
    "CONDITION_TYPES",
    "CONFIRM_ANNOTATION",
    "FINALIZER",
    "FINGERPRINT_PATTERN",
    "GROUP",
    "MAX_DENSE_SIZE",
    "NAMESPACE_KIND",
    "NAMESPACE_PLURAL",
    "NAMESPACE_RESOURCE",
    "NAMESPACE_SHORT",
    "NAMESPACE_SINGULAR",
    "OWNER_METADATA_KEY",
    "OWNER_UID_METADATA_KEY",
    "PLUGIN_KIND",
    "PLUGIN_NAME_PATTERN",
    "PLUGIN_PLURAL",
    "PLUGIN_RESOURCE",
    "PLUGIN_SHORT",
    "PLUGIN_SINGULAR",
    "RETAINED_BY_METADATA_KEY",
    "RETAINED_UID_METADATA_KEY",
    "VECTOR_NAME_PATTERN",
    "VERSION",
    "ActionKind",
    "CamelModel",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "Datatype",
    "DeletionPolicy",
    "Distance",
    "EventReason",
    "HnswSpec",
    "IngestionCollection",
    "LastReconfigure",
    "NamespaceResource",
    "NamespaceSpec",
    "NamespaceStatus",
    "ObjectMeta",
    "Operation",
    "OperationStep",
    "PlanStatus",
    "PlannedAction",
    "PluginRef",
    "PluginResource",
    "PluginSpec",
    "PluginStatus",
    "QdrantConnection",
    "QuantizationSpec",
    "QuantizationType",
    "Reason",
    "SecretKeyRef",
    "SparseModifier",
    "Strategy",
    "VectorSpec",
    "VectorType",
    "cel_rule",
    "default_collection_name",
    "describe",
    "field_path",
    "timestamp",
]
