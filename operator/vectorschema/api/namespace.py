"""The Namespace resource: a tenant namespace's Qdrant collection and its plugins.

Imports only pydantic and the other api modules.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from vectorschema.api.backfill import Reprocess
from vectorschema.api.base import (
    LIST_MAP_BY_ID,
    LIST_MAP_BY_NAME,
    CamelModel,
    cel_rule,
    require_unique,
)
from vectorschema.api.constants import (
    COLLECTION_NAME_PATTERN,
    FINGERPRINT_PATTERN,
    PLUGIN_NAME_PATTERN,
)
from vectorschema.api.vectors import VectorSpec


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
            require_unique([v.name for v in self.vectors], "vectors", "name")
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

    # The API server's first check of the URL; the operator parses it strictly and asks
    # the admin's allowlist (core.policy) before any connection.
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel_rule(
                    "!has(self.url) || isURL(self.url)",
                    "url must be a valid absolute URL",
                    ".url",
                    "FieldValueInvalid",
                )
            ]
        }
    )

    url: Annotated[
        str | None,
        Field(
            pattern=r"^https?://",
            max_length=2048,
            description="Qdrant server URL; must be on the operator's allowlist "
            "(VECTORSCHEMA_ALLOWED_QDRANT_URLS, by default only the operator's own Qdrant).",
        ),
    ] = None
    api_key_secret_ref: Annotated[
        SecretKeyRef | None,
        Field(
            description="API key from a Secret in the same Kubernetes namespace; the Secret "
            "must carry the operator's label (VECTORSCHEMA_SECRET_LABEL, by default "
            "vectorschema.dev/qdrant-credentials=true)."
        ),
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
    reprocess: Annotated[
        Reprocess,
        Field(
            description="After a plan ran: Manual (default) lists collectionsToReprocess "
            "only; Auto also runs each affected plugin's backfill Job for each collection "
            "to reprocess (status.reprocess)."
        ),
    ] = Reprocess.MANUAL

    @model_validator(mode="after")
    def _unique_names(self) -> NamespaceSpec:
        require_unique([p.name for p in self.plugins], "plugins", "name")
        require_unique([c.id for c in self.collections], "collections", "id")
        return self


def default_collection_name(kube_namespace: str, name: str) -> str:
    """Collision-free across Kubernetes namespaces.

    Kubernetes namespace names are DNS labels and resource names DNS subdomains: neither
    may contain '_', so '<namespace>_<name>' is unique and valid for Qdrant.
    """
    result = f"{kube_namespace}_{name}"
    if not re.match(COLLECTION_NAME_PATTERN, result):
        raise ValueError(f"cannot derive a valid collection name from {result!r}")
    return result
