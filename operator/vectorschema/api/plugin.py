"""The Plugin spec: a reusable extractor definition, the named vectors it writes.

Imports only pydantic and the other api modules.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from vectorschema.api.backfill import BackfillSpec
from vectorschema.api.base import LIST_MAP_BY_NAME, CamelModel, require_unique
from vectorschema.api.vectors import VectorSpec


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
    backfill: Annotated[
        BackfillSpec | None,
        Field(
            description="How to fill this plugin's vectors for existing points after a "
            "schema change (a Job template). Without it, Namespaces with reprocess: Auto "
            "list the collections it feeds as Manual."
        ),
    ] = None

    @model_validator(mode="after")
    def _unique_names(self) -> PluginSpec:
        require_unique([v.name for v in self.vectors], "vectors", "name")
        return self
