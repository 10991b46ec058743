"""Whole resources (metadata, spec, status): what the CLI reads from manifests and the CRD
generator documents.

Imports only pydantic and the other api modules.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from vectorschema.api.constants import COLLECTION_NAME_PATTERN
from vectorschema.api.namespace import NamespaceSpec, default_collection_name
from vectorschema.api.plugin import PluginSpec
from vectorschema.api.status import NamespaceStatus, PluginStatus


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
    def default_collection(self) -> str | None:
        """The default collection name, or None when this resource's names cannot make one
        (a long `metadata.name`: then `spec.collectionName` is set, see the validator)."""
        try:
            return default_collection_name(self.kube_namespace, self.metadata.name)
        except ValueError:
            return None

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
