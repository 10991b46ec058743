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
- `update_collection(vectors_config=...)` is accepted and ignored: the client's
  `capabilities()` says so;
- shard/replication/payload settings are not kept (local mode has no shards, replicas or
  payload placement): the settings a collection was created with are recorded in a
  reserved metadata key (`LOCAL_SETTINGS_METADATA_KEY`, see `settings_metadata`) and
  reported by `observe` (`split_settings`; Qdrant's defaults when nothing was recorded),
  so a change of one is planned exactly as on a server, never ignored;
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
from vectorschema.core.schema import CollectionSettings
from vectorschema.qdrant.errors import (
    CollectionNotFound,
    GatewayError,
    QdrantRejected,
    QdrantUnavailable,
    transport_detail,
)

#: Where the datatypes of vectors added in place are remembered.
LOCAL_DATATYPES_METADATA_KEY = "vectorschema.dev/local-datatypes"
#: Where the settings a collection was created with are remembered.
LOCAL_SETTINGS_METADATA_KEY = "vectorschema.dev/local-settings"
RESERVED_METADATA_KEYS = frozenset({LOCAL_DATATYPES_METADATA_KEY, LOCAL_SETTINGS_METADATA_KEY})
MEMORY = ":memory:"
#: What a server reports for settings not given at creation.
SERVER_DEFAULTS = CollectionSettings(
    shard_number=1, replication_factor=1, write_consistency_factor=1, on_disk_payload=True
)


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


_SETTINGS_KEYS = {
    "shardNumber": "shard_number",
    "replicationFactor": "replication_factor",
    "writeConsistencyFactor": "write_consistency_factor",
    "onDiskPayload": "on_disk_payload",
}


def settings_metadata(settings: CollectionSettings) -> dict[str, Any]:
    """The metadata that records the settings a collection is created with (unset ones
    as a server would default them)."""
    recorded = {
        camel: getattr(settings, field)
        if getattr(settings, field) is not None
        else getattr(SERVER_DEFAULTS, field)
        for camel, field in _SETTINGS_KEYS.items()
    }
    return {LOCAL_SETTINGS_METADATA_KEY: recorded}


def split_settings(metadata: Mapping[str, Any]) -> tuple[dict[str, Any], CollectionSettings]:
    """The collection's own metadata, and the settings recorded at creation (a server's
    defaults when none were: a collection made by hand, or before they were recorded)."""
    own = dict(metadata)
    raw = own.pop(LOCAL_SETTINGS_METADATA_KEY, None)
    if not isinstance(raw, Mapping):
        return own, SERVER_DEFAULTS
    values = {
        field: raw.get(camel, getattr(SERVER_DEFAULTS, field))
        for camel, field in _SETTINGS_KEYS.items()
    }
    return own, CollectionSettings(**values)
