"""API constants: group, version, kinds, plurals, annotation and metadata keys, patterns.

Every name the Kubernetes API and the Qdrant metadata share is spelled here once.
Imports nothing.
"""

from __future__ import annotations

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
# Annotation that abandons the recorded operation whose plan fingerprint it holds (the
# way to give up an interrupted operation without any right on status).
ABANDON_ANNOTATION = f"{GROUP}/abandon"
# Finalizer guarding the Qdrant collection of a Namespace.
FINALIZER = f"{GROUP}/collection"
# Keys stamped into the Qdrant collection's metadata.
OWNER_METADATA_KEY = f"{GROUP}/owner"
OWNER_UID_METADATA_KEY = f"{GROUP}/owner-uid"
# Keys that replace the owner stamps when a resource goes with deletionPolicy Retain: the
# collection stays its Kubernetes namespace's (only that namespace may adopt it).
RETAINED_BY_METADATA_KEY = f"{GROUP}/retained-by"
RETAINED_UID_METADATA_KEY = f"{GROUP}/retained-uid"
# The operator's own records, kept in the collection's metadata where a tenant (who can
# write the Namespace resource and, maybe, its status) cannot write: the operation it
# started and may resume, and the plans whose approval is spent.
OPERATION_METADATA_KEY = f"{GROUP}/operation"
APPLIED_METADATA_KEY = f"{GROUP}/applied-plans"
#: The vector names the operator last left live on the collection: the baseline that tells
#: a change by hand (drift). Kept where no tenant writes (status.vectors is only a report).
LIVE_VECTORS_METADATA_KEY = f"{GROUP}/live-vectors"

# Backfill Jobs (issue 18): the label every Job the operator runs carries (its watch
# selects on it), the owner's uid as a label, and what the Job is for, as annotations
# (collection ids and plugin names need not be valid label values).
BACKFILL_LABEL = f"{GROUP}/backfill"
BACKFILL_OWNER_UID_LABEL = f"{GROUP}/owner-uid"
BACKFILL_COLLECTION_ANNOTATION = f"{GROUP}/collection-id"
BACKFILL_PLUGIN_ANNOTATION = f"{GROUP}/plugin"
BACKFILL_PLAN_ANNOTATION = f"{GROUP}/plan"
BACKFILL_ATTEMPT_ANNOTATION = f"{GROUP}/attempt"
BACKFILL_TEMPLATE_ANNOTATION = f"{GROUP}/template-hash"
# Annotation on a Namespace resource that retries its failed backfill Jobs: the value is
# any new token (e.g. a timestamp); each new value retries once.
RETRY_BACKFILL_ANNOTATION = f"{GROUP}/retry-backfill"

# A Qdrant vector name or collection name we accept: letters, digits, '_', '-', '.'.
VECTOR_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
COLLECTION_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$"
PLUGIN_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$"
FINGERPRINT_PATTERN = r"^[0-9a-f]{16}$"
MAX_DENSE_SIZE = 65536
