"""The calls the operator makes to Qdrant, and nothing else: a narrow `typing.Protocol`.

The controller and the CLI depend on this, never on qdrant-client; `client.ClientGateway`
implements it (mypy proves it conforms) and tests wrap it to record or fail calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from vectorschema.core.schema import (
    Capabilities,
    CollectionSettings,
    ObservedCollection,
    VectorDef,
)


class QdrantGateway(Protocol):
    """The calls the operator makes to Qdrant, and nothing else."""

    @property
    def location(self) -> str:
        """Which Qdrant, as shown to people (a redacted url, or the local store's path)."""
        ...

    def capabilities(self) -> Capabilities: ...

    def check(self, vectors: Sequence[VectorDef]) -> None:
        """Raise QdrantRejected, without any call, for vectors Qdrant cannot take."""
        ...

    def observe(self, collection: str) -> ObservedCollection | None: ...

    def count_with_vector(self, collection: str, vector: str, exact: bool = True) -> int:
        """Points carrying `vector`; an exact count raises `QdrantTimeout` when it takes
        too long, `exact=False` asks Qdrant for its estimate."""
        ...

    def create_collection(
        self,
        collection: str,
        vectors: Sequence[VectorDef],
        settings: CollectionSettings,
        metadata: Mapping[str, Any],
    ) -> None: ...

    def delete_collection(self, collection: str) -> None: ...

    def create_vector(self, collection: str, vector: VectorDef) -> None: ...

    def delete_vector(self, collection: str, vector: str) -> None: ...

    def update_vector(self, collection: str, vector: VectorDef) -> None: ...

    def set_metadata(self, collection: str, metadata: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...
