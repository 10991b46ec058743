"""qdrant-client's local mode (an embedded store on disk, or in memory): every shim in one
place.

- the store's path: `$QDRANT_PATH`, else `<repo>/.data/qdrant` in a source checkout, else
  `~/.local/share/vectorschema/qdrant`; a store is locked by one process, so opening it
  twice fails (`open_client` says so);
- `create_vector_name` drops `datatype` (dense and sparse): the datatype of a vector added
  in place is recorded in a reserved collection-metadata key (`LOCAL_DATATYPES_METADATA_KEY`,
  see `datatypes_update`) and reported by `observe` (`split_datatypes`); local mode stores
  every vector as float32 anyway, so only the reported schema matters;
- `update_collection(metadata={k: None})` on a collection without metadata stores the
  `None` instead of deleting: the client sends only real deletions;
- `update_collection(vectors_config=...)` is accepted and ignored, and shard/replication
  settings are not kept: the client's `capabilities()` says so;
- failures surface as `ValueError` / `RuntimeError`, mapped here (`translate`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from vectorschema.api import Datatype
from vectorschema.qdrant.errors import (
    CollectionNotFound,
    GatewayError,
    QdrantRejected,
    QdrantUnavailable,
    transport_detail,
)

#: Where the datatypes of vectors added in place are remembered.
LOCAL_DATATYPES_METADATA_KEY = "vectorschema.dev/local-datatypes"
MEMORY = ":memory:"


def default_path() -> str:
    """Local store: `$QDRANT_PATH`, else `<repo>/.data/qdrant` in a source checkout, else
    `~/.local/share/vectorschema/qdrant`."""
    env = os.environ.get("QDRANT_PATH")
    if env:
        return env
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").is_file() and (repo / "operator" / "vectorschema").is_dir():
        return str(repo / ".data" / "qdrant")
    return str(Path.home() / ".local" / "share" / "vectorschema" / "qdrant")


def resolve_path(path: str | None) -> str:
    """The store's absolute path (`:memory:` stays as it is); None: `default_path()`."""
    if path == MEMORY:
        return MEMORY
    return str(Path(path or default_path()).expanduser().resolve())


def shown(location: str) -> str:
    """The store as shown to people."""
    return "in-memory local Qdrant" if location == MEMORY else f"local Qdrant {location}"


def open_client(location: str) -> QdrantClient:
    """A client on the store at `location` (a resolved path, or `:memory:`)."""
    try:
        if location == MEMORY:
            return QdrantClient(location=MEMORY)
        return QdrantClient(path=location, force_disable_check_same_thread=True)
    except RuntimeError:
        # the store is locked by another process (or another client in this one)
        raise QdrantUnavailable(
            f"{shown(location)} is in use by another client (another process, or another "
            "gateway in this one); stop it, or set QDRANT_PATH or QDRANT_URL"
        ) from None
    except OSError as exc:
        raise QdrantUnavailable(
            f"{shown(location)} cannot be opened: {transport_detail(exc)}"
        ) from None


def translate(exc: Exception, what: str, where: str, collection: str | None) -> GatewayError | None:
    """Local mode raises plain ValueError / RuntimeError: map them like server answers."""
    if isinstance(exc, ValueError):
        text = " ".join(str(exc).split())
        if collection is not None and re.fullmatch(r"Collection .* not found", text):
            return CollectionNotFound(f"collection {collection!r} does not exist in {where}")
        return QdrantRejected(f"{where} could not {what}: {text[:200]}")
    if isinstance(exc, RuntimeError):
        return QdrantUnavailable(f"{where} cannot {what}: {str(exc)[:200]}")
    return None


def split_datatypes(
    metadata: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """The collection's own metadata, and the datatypes remembered for vectors made in
    place (empty when there are none, as on a server)."""
    own = dict(metadata or {})
    remembered = own.pop(LOCAL_DATATYPES_METADATA_KEY, None)
    return own, remembered if isinstance(remembered, Mapping) else {}


def datatypes_update(
    metadata: Mapping[str, Any] | None, vector: str, datatype: Datatype | None
) -> dict[str, Any] | None:
    """The metadata update that remembers `vector`'s datatype (None: forgets it), or None
    when there is nothing to change. The key is deleted with its last entry."""
    raw = (metadata or {}).get(LOCAL_DATATYPES_METADATA_KEY)
    known: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
    if datatype is None or datatype is Datatype.FLOAT32:
        if vector not in known:
            return None
        known.pop(vector)
    else:
        known[vector] = datatype.value
    # None deletes the key when the last entry goes (the key exists, so it really goes)
    return {LOCAL_DATATYPES_METADATA_KEY: known or None}
