"""The one place that talks to Qdrant.

Everything else in vectorschema speaks `schema.VectorDef` / `ObservedCollection`; this
module turns those into qdrant-client calls and Qdrant's answers back into them, so that:

- every `qdrant_client` import, and every quirk of a Qdrant version or of qdrant-client's
  local mode, lives here and nowhere else (planning stays pure and testable);
- observed schemas are normalised exactly like `schema.vector_def_from_spec` normalises
  desired ones (enum casing, `datatype None` = float32, empty HNSW diff = defaults), so
  "spec -> create -> observe" gives equal `VectorDef`s and an unchanged collection plans to
  nothing;
- failures reach the operator as two kinds a person can act on: `QdrantUnavailable`
  (retry later) and `QdrantRejected` (the request itself is wrong), with short messages that
  never carry the API key;
- one client is shared per Qdrant (local-mode stores are locked by one process, and local
  mode is not thread-safe), with every call serialised by a lock.

Local-mode behaviour this module compensates for (qdrant-client 1.20):

- `create_vector_name` drops `datatype` (dense and sparse): the datatype of a vector added
  in place is recorded in a reserved collection-metadata key and reported by `observe`
  (local mode stores every vector as float32 anyway, so only the reported schema matters);
- `update_collection(metadata={k: None})` on a collection without metadata stores the
  `None` instead of deleting: keys that are not there are not sent;
- `update_collection(vectors_config=...)` is accepted and ignored, and shard/replication
  settings are not kept: `capabilities()` says so (`tunes_vectors`,
  `reports_cluster_settings` are False).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import ValidationError
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from vectorschema.models import Datatype, Distance, SparseModifier, VectorType
from vectorschema.schema import (
    IN_PLACE_VECTORS_SINCE,
    Capabilities,
    CollectionSettings,
    ObservedCollection,
    VectorDef,
)

__all__ = [
    "LOCAL_DATATYPES_METADATA_KEY",
    "ClientGateway",
    "CollectionNotFound",
    "GatewayError",
    "QdrantGateway",
    "QdrantRejected",
    "QdrantUnavailable",
    "close_all",
    "connect",
    "default_from_env",
    "default_path",
    "forget",
]

_log = logging.getLogger(__name__)

T = TypeVar("T")

# Servers from this version create and delete named vectors on a live collection.
# Local mode only: where the datatypes of vectors added in place are remembered.
LOCAL_DATATYPES_METADATA_KEY = "vectorschema.dev/local-datatypes"
# Page size of the scroll fallback of `count_with_vector`.
SCROLL_PAGE = 1000
MEMORY = ":memory:"


# --- errors --------------------------------------------------------------------------


class GatewayError(Exception):
    """Base of every error the gateway raises; the message is short and safe to show."""


class QdrantUnavailable(GatewayError):
    """Qdrant could not be reached or failed (connection, timeout, 5xx): retry later."""


class QdrantRejected(GatewayError):
    """Qdrant refused the request (4xx other than not found): retrying will not help."""


class CollectionNotFound(GatewayError):
    """A write addressed a collection that does not exist (any more): plan again."""


# --- the protocol --------------------------------------------------------------------


class QdrantGateway(Protocol):
    """The calls the operator makes to Qdrant, and nothing else."""

    def capabilities(self) -> Capabilities: ...

    def observe(self, collection: str) -> ObservedCollection | None: ...

    def count_with_vector(self, collection: str, vector: str) -> int: ...

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


# --- conversions: VectorDef -> qdrant-client -----------------------------------------

_HNSW_KEYS = {
    "m": "m",
    "efConstruct": "ef_construct",
    "fullScanThreshold": "full_scan_threshold",
    "onDisk": "on_disk",
}
# Sparse vectors have no HNSW graph; their inverted index has these two of the settings.
_SPARSE_INDEX_KEYS = {"fullScanThreshold": "full_scan_threshold", "onDisk": "on_disk"}


def _q_distance(v: VectorDef) -> qm.Distance:
    if v.size is None or v.distance is None:
        raise QdrantRejected(f"vector {v.name!r}: {v.type.value} vectors need a size and distance")
    return qm.Distance(v.distance.value)


def _q_storage_datatype(datatype: Datatype) -> qm.VectorStorageDatatype | None:
    # float32 is Qdrant's default: leave it unset, as a collection made by hand would be.
    return None if datatype is Datatype.FLOAT32 else qm.VectorStorageDatatype(datatype.value)


def _q_datatype(datatype: Datatype) -> qm.Datatype | None:
    return None if datatype is Datatype.FLOAT32 else qm.Datatype(datatype.value)


def _q_modifier(modifier: SparseModifier) -> qm.Modifier | None:
    return None if modifier is SparseModifier.NONE else qm.Modifier(modifier.value)


def _q_multivector(v: VectorDef) -> qm.MultiVectorConfig | None:
    if v.type is VectorType.MULTIDENSE:
        return qm.MultiVectorConfig(comparator=qm.MultiVectorComparator.MAX_SIM)
    return None


def _q_hnsw(v: VectorDef) -> qm.HnswConfigDiff | None:
    if not v.hnsw:
        return None
    unknown = sorted(k for k, _ in v.hnsw if k not in _HNSW_KEYS)
    if unknown:
        raise QdrantRejected(f"vector {v.name!r}: unknown hnsw settings {', '.join(unknown)}")
    return qm.HnswConfigDiff(**{_HNSW_KEYS[k]: value for k, value in v.hnsw})


def _q_quantization(v: VectorDef) -> qm.QuantizationConfig | None:
    if not v.quantization:
        return None
    q = dict(v.quantization)
    kind = q.get("type")
    always_ram = q.get("alwaysRam")
    if kind == "scalar":
        return qm.ScalarQuantization(
            scalar=qm.ScalarQuantizationConfig(
                type=qm.ScalarType.INT8, quantile=q.get("quantile"), always_ram=always_ram
            )
        )
    if kind == "binary":
        return qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig(always_ram=always_ram))
    if kind == "product" and q.get("compression") is not None:
        return qm.ProductQuantization(
            product=qm.ProductQuantizationConfig(
                compression=qm.CompressionRatio(q["compression"]), always_ram=always_ram
            )
        )
    raise QdrantRejected(f"vector {v.name!r}: unsupported quantization {q!r}")


def _q_sparse_index(v: VectorDef, *, with_datatype: bool) -> qm.SparseIndexParams | None:
    if v.on_disk is not None or v.quantization:
        raise QdrantRejected(f"vector {v.name!r}: sparse vectors take no onDisk or quantization")
    hnsw = dict(v.hnsw)
    unsupported = sorted(k for k in hnsw if k not in _SPARSE_INDEX_KEYS)
    if unsupported:
        raise QdrantRejected(
            f"vector {v.name!r}: sparse vectors have no HNSW graph, "
            f"only fullScanThreshold and onDisk apply (not {', '.join(unsupported)})"
        )
    fields: dict[str, Any] = {_SPARSE_INDEX_KEYS[k]: value for k, value in hnsw.items()}
    if with_datatype:
        fields["datatype"] = _q_datatype(v.datatype)
    fields = {k: value for k, value in fields.items() if value is not None}
    return qm.SparseIndexParams(**fields) if fields else None


def _q_vector_params(v: VectorDef) -> qm.VectorParams:
    return qm.VectorParams(
        size=v.size or 0,
        distance=_q_distance(v),
        datatype=_q_datatype(v.datatype),
        on_disk=v.on_disk,
        hnsw_config=_q_hnsw(v),
        quantization_config=_q_quantization(v),
        multivector_config=_q_multivector(v),
    )


def _q_sparse_params(v: VectorDef) -> qm.SparseVectorParams:
    return qm.SparseVectorParams(
        modifier=_q_modifier(v.modifier), index=_q_sparse_index(v, with_datatype=True)
    )


def _has_dense_tuning(v: VectorDef) -> bool:
    return v.on_disk is not None or bool(v.hnsw) or bool(v.quantization)


# --- conversions: qdrant-client -> VectorDef -----------------------------------------


def _items(values: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, v) for k, v in values.items() if v is not None))


def _enum_value(value: Any) -> Any:
    return getattr(value, "value", value)


def _datatype(value: Any, where: str) -> Datatype:
    if value is None:
        return Datatype.FLOAT32
    raw = _enum_value(value)
    try:
        return Datatype(raw)
    except ValueError:
        raise GatewayError(
            f"{where} uses datatype {raw}, which vectorschema does not manage"
        ) from None


def _hnsw_items(h: qm.HnswConfigDiff | None) -> tuple[tuple[str, Any], ...]:
    if h is None:
        return ()
    return _items(
        {
            "m": h.m,
            "efConstruct": h.ef_construct,
            "fullScanThreshold": h.full_scan_threshold,
            "onDisk": h.on_disk,
        }
    )


def _quantization_items(q: qm.QuantizationConfig | None) -> tuple[tuple[str, Any], ...]:
    if q is None:
        return ()
    if isinstance(q, qm.ScalarQuantization):
        return _items(
            {"type": "scalar", "quantile": q.scalar.quantile, "alwaysRam": q.scalar.always_ram}
        )
    if isinstance(q, qm.BinaryQuantization):
        return _items({"type": "binary", "alwaysRam": q.binary.always_ram})
    if isinstance(q, qm.ProductQuantization):
        return _items(
            {
                "type": "product",
                "compression": _enum_value(q.product.compression),
                "alwaysRam": q.product.always_ram,
            }
        )
    # Kinds vectorschema cannot ask for (turbo, ...): shown as such, so a plan replaces them.
    dumped = q.model_dump(mode="json", exclude_none=True)
    kind = next(iter(dumped), "unknown")
    return _items({"type": kind})


def _dense_def(name: str, p: qm.VectorParams, collection: str) -> VectorDef:
    on_disk = p.on_disk
    if on_disk is None and p.memory is qm.Memory.COLD:
        on_disk = True  # newer servers may report the placement instead of the flag
    return VectorDef(
        name=name,
        type=VectorType.MULTIDENSE if p.multivector_config is not None else VectorType.DENSE,
        size=p.size,
        distance=Distance(_enum_value(p.distance)),
        datatype=_datatype(p.datatype, f"collection {collection!r}, vector {name!r}"),
        on_disk=on_disk,
        hnsw=_hnsw_items(p.hnsw_config),
        quantization=_quantization_items(p.quantization_config),
    )


def _sparse_def(name: str, p: qm.SparseVectorParams, collection: str) -> VectorDef:
    index = p.index
    modifier = _enum_value(p.modifier) if p.modifier is not None else SparseModifier.NONE.value
    return VectorDef(
        name=name,
        type=VectorType.SPARSE,
        datatype=_datatype(
            index.datatype if index else None, f"collection {collection!r}, vector {name!r}"
        ),
        modifier=SparseModifier(modifier),
        hnsw=_items({"fullScanThreshold": index.full_scan_threshold, "onDisk": index.on_disk})
        if index
        else (),
    )


def _observed(collection: str, info: qm.CollectionInfo) -> ObservedCollection:
    params = info.config.params
    metadata = dict(info.config.metadata or {})
    local_datatypes = metadata.pop(LOCAL_DATATYPES_METADATA_KEY, None)
    overlay: Mapping[str, Any] = local_datatypes if isinstance(local_datatypes, Mapping) else {}

    vectors: list[VectorDef] = []
    dense = params.vectors
    if isinstance(dense, qm.VectorParams):
        dense = {"": dense}
    for name, p in (dense or {}).items():
        if p.datatype is None and name in overlay:
            p = p.model_copy(update={"datatype": qm.Datatype(overlay[name])})
        vectors.append(_dense_def(name, p, collection))
    for name, sp in (params.sparse_vectors or {}).items():
        if (sp.index is None or sp.index.datatype is None) and name in overlay:
            index = sp.index or qm.SparseIndexParams()
            index = index.model_copy(update={"datatype": qm.Datatype(overlay[name])})
            sp = sp.model_copy(update={"index": index})
        vectors.append(_sparse_def(name, sp, collection))

    return ObservedCollection(
        name=collection,
        vectors=tuple(vectors),
        points_count=info.points_count or 0,
        metadata=metadata,
        settings=CollectionSettings(
            shard_number=params.shard_number,
            replication_factor=params.replication_factor,
            write_consistency_factor=params.write_consistency_factor,
            on_disk_payload=params.on_disk_payload,
        ),
    )


def _parse_version(version: str) -> tuple[int, int] | None:
    match = re.match(r"\s*v?(\d+)\.(\d+)", version)
    return (int(match.group(1)), int(match.group(2))) if match else None


# --- errors from qdrant-client -------------------------------------------------------


def _server_detail(exc: UnexpectedResponse) -> str:
    """The server's own error text (`{"status": {"error": ...}}`), short."""
    detail = ""
    try:
        body = json.loads(exc.content)
        status = body.get("status") if isinstance(body, dict) else None
        if isinstance(status, dict) and isinstance(status.get("error"), str):
            detail = status["error"]
    except (ValueError, TypeError):
        detail = ""
    if not detail:
        detail = exc.reason_phrase or "no details"
    detail = " ".join(detail.split())
    return detail if len(detail) <= 200 else detail[:197] + "..."


def _transport_detail(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timed out"
    if isinstance(exc, httpx.TransportError | OSError):
        text = re.sub(r"\[Errno -?\d+\]\s*", "", str(exc)).strip()
        text = text[:1].lower() + text[1:]
        return text[:200] or type(exc).__name__
    return type(exc).__name__


def _redact_url(url: str) -> str:
    """Scheme, host, port and path only: no userinfo, query or fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    except ValueError:
        return "<invalid url>"


# --- the client gateway ----------------------------------------------------------------


class ClientGateway:
    """`QdrantGateway` over one `QdrantClient`, every call serialised by one lock."""

    def __init__(self, client: QdrantClient, *, location: str, local: bool) -> None:
        """`location` is shown in messages: a redacted url or a local path, never a key."""
        self._client = client
        self._location = location
        self._local = local
        self._lock = threading.RLock()
        self._capabilities: Capabilities | None = None
        self._closed = False
        self._cache_key: tuple[str, ...] | None = None

    @classmethod
    def open(
        cls,
        *,
        url: str | None = None,
        api_key: str | None = None,
        path: str | None = None,
        timeout: float = 10.0,
    ) -> ClientGateway:
        """A new, uncached gateway (see `connect` for the shared one). Does no I/O for a url."""
        if url is not None and path is not None:
            raise ValueError("give a Qdrant url or a local path, not both")
        if url is None:
            if api_key is not None:
                raise ValueError("an API key only applies to a Qdrant url")
            location = _resolve_path(path)
            where = "in-memory local Qdrant" if location == MEMORY else f"local Qdrant {location}"
            try:
                if location == MEMORY:
                    client = QdrantClient(location=MEMORY)
                else:
                    client = QdrantClient(path=location, force_disable_check_same_thread=True)
            except RuntimeError:
                # the store is locked by another process (or another client in this one)
                raise QdrantUnavailable(
                    f"{where} is in use by another client (another process, or another "
                    "gateway in this one); stop it, or set QDRANT_PATH or QDRANT_URL"
                ) from None
            except OSError as exc:
                raise QdrantUnavailable(
                    f"{where} cannot be opened: {_transport_detail(exc)}"
                ) from None
            return cls(client, location=location, local=True)

        shown = _redact_url(url)
        try:
            client = QdrantClient(
                url=url,
                api_key=api_key,
                timeout=max(1, math.ceil(timeout)),
                check_compatibility=False,
            )
        except ValueError:
            raise ValueError(f"invalid Qdrant url {shown!r}") from None
        return cls(client, location=shown, local=False)

    # -- plumbing -------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return self._location

    @property
    def local(self) -> bool:
        return self._local

    def __repr__(self) -> str:
        mode = "local" if self._local else "remote"
        return f"ClientGateway({mode} {self._location!r})"

    def _where(self) -> str:
        if not self._local:
            return f"Qdrant at {self._location}"
        if self._location == MEMORY:
            return "in-memory local Qdrant"
        return f"local Qdrant {self._location}"

    @contextlib.contextmanager
    def raw(self) -> Iterator[QdrantClient]:
        """The client itself, with the lock held: for tests and benchmarks seeding points."""
        with self._lock:
            yield self._client

    def _call(self, what: str, fn: Callable[[], T], *, collection: str | None = None) -> T:
        """Run one client call under the lock, translating its failures.

        The translated error is raised outside the `except` block, so the original
        exception (whose request may carry the api-key header) is neither its cause nor its
        context.
        """
        with self._lock:
            if self._closed:
                raise GatewayError(f"{self._where()}: the gateway is closed")
            try:
                return fn()
            except Exception as exc:
                error = self._translate(exc, what, collection)
                if error is None:
                    raise
        raise error

    def _translate(self, exc: Exception, what: str, collection: str | None) -> GatewayError | None:
        where = self._where()
        if isinstance(exc, GatewayError):
            return exc
        if isinstance(exc, UnexpectedResponse):
            status = exc.status_code
            detail = _server_detail(exc)
            if status == 404 and collection is not None:
                # "Not found: Collection `c` doesn't exist!"; a 404 without it is a route
                # this server does not have (the vector endpoints before 1.18)
                if "collection" in detail.lower() and collection in detail:
                    return CollectionNotFound(
                        f"collection {collection!r} does not exist in {where}"
                    )
                return QdrantRejected(f"{where} cannot {what}: HTTP 404: {detail}")
            if status is None or status >= 500:
                return QdrantUnavailable(f"{where} failed to {what}: HTTP {status}: {detail}")
            if status in (401, 403):
                return QdrantRejected(
                    f"{where} refused to {what}: HTTP {status}, check the API key"
                )
            return QdrantRejected(f"{where} could not {what}: {detail}")
        if isinstance(exc, ResponseHandlingException):
            source = exc.source
            if isinstance(source, ValidationError):
                return QdrantUnavailable(f"{where} sent an unexpected answer to {what}")
            return QdrantUnavailable(f"{where} is unreachable: {_transport_detail(source)}")
        if isinstance(exc, httpx.HTTPError | ConnectionError | TimeoutError):
            return QdrantUnavailable(f"{where} is unreachable: {_transport_detail(exc)}")
        if self._local and isinstance(exc, ValueError):
            text = " ".join(str(exc).split())
            if collection is not None and re.fullmatch(r"Collection .* not found", text):
                return CollectionNotFound(f"collection {collection!r} does not exist in {where}")
            return QdrantRejected(f"{where} could not {what}: {text[:200]}")
        if self._local and isinstance(exc, RuntimeError):
            return QdrantUnavailable(f"{where} cannot {what}: {str(exc)[:200]}")
        return None

    def _get_collection(self, collection: str) -> qm.CollectionInfo:
        return self._call(
            "read the collection",
            lambda: self._client.get_collection(collection),
            collection=collection,
        )

    # -- QdrantGateway -------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        with self._lock:
            if self._capabilities is None:
                info = self._call("read its version", self._client.info)
                version = _parse_version(info.version)
                self._capabilities = Capabilities(
                    server_version=info.version,
                    in_place_vectors=version is not None and version >= IN_PLACE_VECTORS_SINCE,
                    tunes_vectors=not self._local,
                    reports_cluster_settings=not self._local,
                )
            return self._capabilities

    def observe(self, collection: str) -> ObservedCollection | None:
        try:
            info = self._get_collection(collection)
        except CollectionNotFound:
            return None
        return _observed(collection, info)

    def count_with_vector(self, collection: str, vector: str) -> int:
        flt = qm.Filter(must=[qm.HasVectorCondition(has_vector=vector)])
        try:
            result = self._call(
                f"count points with vector {vector!r}",
                lambda: self._client.count(collection, count_filter=flt, exact=True),
                collection=collection,
            )
        except QdrantRejected:
            # servers without `has_vector` filters: count by scrolling that vector
            _log.debug("has_vector count refused by %s; counting by scroll", self._where())
            return self._count_by_scroll(collection, vector)
        return result.count

    def _count_by_scroll(self, collection: str, vector: str) -> int:
        """Exact count by scrolling pages with only that vector: slow, always available."""
        total = 0
        offset: qm.ExtendedPointId | None = None
        while True:
            records, offset = self._call(
                f"scroll vector {vector!r}",
                functools.partial(
                    self._client.scroll,
                    collection,
                    limit=SCROLL_PAGE,
                    offset=offset,
                    with_payload=False,
                    with_vectors=[vector],
                ),
                collection=collection,
            )
            for record in records:
                if isinstance(record.vector, dict):
                    total += vector in record.vector
                elif record.vector is not None and vector == "":
                    total += 1
            if offset is None:
                return total

    def create_collection(
        self,
        collection: str,
        vectors: Sequence[VectorDef],
        settings: CollectionSettings,
        metadata: Mapping[str, Any],
    ) -> None:
        dense = {v.name: _q_vector_params(v) for v in vectors if v.type is not VectorType.SPARSE}
        sparse = {v.name: _q_sparse_params(v) for v in vectors if v.type is VectorType.SPARSE}
        self._call(
            "create the collection",
            lambda: self._client.create_collection(
                collection,
                vectors_config=dense,
                sparse_vectors_config=sparse or None,
                shard_number=settings.shard_number,
                replication_factor=settings.replication_factor,
                write_consistency_factor=settings.write_consistency_factor,
                on_disk_payload=settings.on_disk_payload,
                metadata=dict(metadata) or None,
            ),
            collection=collection,
        )

    def delete_collection(self, collection: str) -> None:
        with contextlib.suppress(CollectionNotFound):
            self._call(
                "delete the collection",
                lambda: self._client.delete_collection(collection),
                collection=collection,
            )

    def create_vector(self, collection: str, vector: VectorDef) -> None:
        config: qm.VectorNameConfig
        if vector.type is VectorType.SPARSE:
            index = _q_sparse_index(vector, with_datatype=False)  # validates before any write
            config = qm.SparseVectorNameConfig(
                sparse=qm.SparseVectorConfig(
                    modifier=_q_modifier(vector.modifier),
                    datatype=_q_storage_datatype(vector.datatype),
                )
            )
        else:
            index = None
            tuning = qm.VectorParamsDiff(
                hnsw_config=_q_hnsw(vector),
                quantization_config=_q_quantization(vector),
                on_disk=vector.on_disk,
            )
            config = qm.DenseVectorNameConfig(
                dense=qm.DenseVectorConfig(
                    size=vector.size or 0,
                    distance=_q_distance(vector),
                    multivector_config=_q_multivector(vector),
                    datatype=_q_storage_datatype(vector.datatype),
                )
            )
        with self._lock:
            self._call(
                f"create vector {vector.name!r}",
                lambda: self._client.create_vector_name(collection, vector.name, config),
                collection=collection,
            )
            if self._local:
                self._remember_local_datatype(collection, vector.name, vector.datatype)
            if vector.type is VectorType.SPARSE:
                if index is not None:
                    self._update_sparse_index(collection, vector.name, index)
            elif _has_dense_tuning(vector):
                self._call(
                    f"tune vector {vector.name!r}",
                    lambda: self._client.update_collection(
                        collection, vectors_config={vector.name: tuning}
                    ),
                    collection=collection,
                )

    def delete_vector(self, collection: str, vector: str) -> None:
        with self._lock:
            self._call(
                f"delete vector {vector!r}",
                lambda: self._client.delete_vector_name(collection, vector),
                collection=collection,
            )
            if self._local:
                self._remember_local_datatype(collection, vector, None)

    def update_vector(self, collection: str, vector: VectorDef) -> None:
        """Set the vector's tuning to exactly `vector`'s: unset hnsw/quantization are reset.

        Dense: an empty HNSW diff resets the vector to the collection's HNSW settings and
        `Disabled` removes its quantization; `on_disk None` leaves the flag as it is.
        Sparse: the index's fullScanThreshold / onDisk are set (unset ones are kept).
        """
        if vector.type is VectorType.SPARSE:
            index = _q_sparse_index(vector, with_datatype=False)
            if index is not None:
                self._update_sparse_index(collection, vector.name, index)
            return
        quantization: qm.QuantizationConfigDiff = _q_quantization(vector) or qm.Disabled.DISABLED
        diff = qm.VectorParamsDiff(
            hnsw_config=_q_hnsw(vector) or qm.HnswConfigDiff(),
            quantization_config=quantization,
            on_disk=vector.on_disk,
        )
        self._call(
            f"tune vector {vector.name!r}",
            lambda: self._client.update_collection(collection, vectors_config={vector.name: diff}),
            collection=collection,
        )

    def _update_sparse_index(
        self, collection: str, vector: str, index: qm.SparseIndexParams
    ) -> None:
        self._call(
            f"tune vector {vector!r}",
            lambda: self._client.update_collection(
                collection, sparse_vectors_config={vector: qm.SparseVectorParams(index=index)}
            ),
            collection=collection,
        )

    def set_metadata(self, collection: str, metadata: Mapping[str, Any]) -> None:
        """Merge `metadata` into the collection's; a `None` value deletes that key."""
        update = {k: v for k, v in metadata.items() if k != LOCAL_DATATYPES_METADATA_KEY}
        with self._lock:
            if any(v is None for v in update.values()):
                # Deleting a key that is not there must not store a null (local mode does,
                # when the collection has no metadata at all): send only real deletions.
                current = self._get_collection(collection).config.metadata or {}
                update = {k: v for k, v in update.items() if v is not None or k in current}
            if not update:
                return
            self._call(
                "update the collection metadata",
                lambda: self._client.update_collection(collection, metadata=update),
                collection=collection,
            )

    def _remember_local_datatype(
        self, collection: str, vector: str, datatype: Datatype | None
    ) -> None:
        """Local mode drops the datatype of vectors made in place: keep it in metadata."""
        metadata = self._get_collection(collection).config.metadata or {}
        raw = metadata.get(LOCAL_DATATYPES_METADATA_KEY)
        known: dict[str, Any] = dict(raw) if isinstance(raw, Mapping) else {}
        if datatype is None or datatype is Datatype.FLOAT32:
            if vector not in known:
                return
            known.pop(vector)
        else:
            known[vector] = datatype.value
        # None deletes the key when the last entry goes (the key exists, so it really goes)
        value: dict[str, Any] | None = known or None
        self._call(
            "update the collection metadata",
            lambda: self._client.update_collection(
                collection, metadata={LOCAL_DATATYPES_METADATA_KEY: value}
            ),
            collection=collection,
        )

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(Exception):
                self._client.close()
        _drop(self)


if TYPE_CHECKING:

    def _conforms(gateway: ClientGateway) -> QdrantGateway:
        return gateway


# --- the process-wide cache -----------------------------------------------------------

_cache: dict[tuple[str, ...], ClientGateway] = {}
_cache_lock = threading.Lock()


def default_path() -> str:
    """Local store: `$QDRANT_PATH`, else `<repo>/.data/qdrant` in a source checkout, else
    `~/.local/share/vectorschema/qdrant`."""
    env = os.environ.get("QDRANT_PATH")
    if env:
        return env
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "operator" / "vectorschema").is_dir():
        return str(repo / ".data" / "qdrant")
    return str(Path.home() / ".local" / "share" / "vectorschema" / "qdrant")


def _resolve_path(path: str | None) -> str:
    if path == MEMORY:
        return MEMORY
    return str(Path(path or default_path()).expanduser().resolve())


def _key(*, url: str | None, api_key: str | None, path: str | None) -> tuple[str, ...]:
    if url is not None:
        digest = hashlib.sha256(api_key.encode()).hexdigest() if api_key is not None else ""
        return ("url", url.rstrip("/"), digest)
    return ("path", _resolve_path(path))


def connect(
    *,
    url: str | None = None,
    api_key: str | None = None,
    path: str | None = None,
    timeout: float = 10.0,
) -> ClientGateway:
    """The shared gateway for a url (and API key) or a local path, made on first use.

    With neither url nor path: the local store at `default_path()`. A local store is
    locked by one process, so everything in this process must go through this gateway.
    """
    if url is not None and path is not None:
        raise ValueError("give a Qdrant url or a local path, not both")
    if url is None and api_key is not None:
        raise ValueError("an API key only applies to a Qdrant url")
    key = _key(url=url, api_key=api_key, path=path)
    with _cache_lock:
        gateway = _cache.get(key)
        if gateway is None:
            gateway = ClientGateway.open(
                url=url,
                api_key=api_key,
                path=None if url is not None else key[1],
                timeout=timeout,
            )
            gateway._cache_key = key
            _cache[key] = gateway
            _log.info("Using %r", gateway)
        return gateway


def default_from_env() -> ClientGateway:
    """The operator's default connection: `QDRANT_URL` (+ `QDRANT_API_KEY`), else the
    local store (`QDRANT_PATH` or the default path)."""
    url = os.environ.get("QDRANT_URL") or None
    if url is not None:
        return connect(url=url, api_key=os.environ.get("QDRANT_API_KEY") or None)
    if os.environ.get("QDRANT_API_KEY"):
        _log.warning("QDRANT_API_KEY is set without QDRANT_URL: ignored for the local store")
    return connect(path=os.environ.get("QDRANT_PATH") or None)


def _drop(gateway: ClientGateway) -> None:
    with _cache_lock:
        key = gateway._cache_key
        if key is not None and _cache.get(key) is gateway:
            del _cache[key]


def forget(*, url: str | None = None, api_key: str | None = None, path: str | None = None) -> bool:
    """Close and drop the cached gateway for these arguments; False if there was none."""
    key = _key(url=url, api_key=api_key, path=path)
    with _cache_lock:
        gateway = _cache.pop(key, None)
    if gateway is None:
        return False
    gateway.close()
    return True


def close_all() -> None:
    """Close and drop every cached gateway."""
    with _cache_lock:
        gateways = list(_cache.values())
        _cache.clear()
    for gateway in gateways:
        gateway.close()
