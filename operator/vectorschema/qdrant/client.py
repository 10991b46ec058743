"""`ClientGateway`: the `QdrantGateway` over one qdrant-client `QdrantClient`.

- A **local store** runs every call under one lock (local mode is not thread-safe, and one
  client is shared per store, see `pool`).
- A **server** runs calls concurrently, bounded by the server's `limits.CallLimiter` (at
  most `max_in_flight`, one lane per collection so one collection's calls keep their
  order) and guarded by the server's `breaker.Breaker` (a server known to be down gets a
  few probes; the other calls fail at once without I/O). Every call has the client's
  timeout; an exact count has its own, shorter budget (`count_timeout`).

No call ever follows an alias: an alias inside a tenant's prefix may point at another
tenant's collection, and Qdrant would follow it. Such a name is refused
(`CollectionIsAlias`) before anything is written. Qdrant keeps collection and alias names
apart (since 1.1; qdrant-client's local mode too): a create of an alias's name is refused
by Qdrant itself, and a read of a name that Qdrant does not find is not an alias either.
So a new collection costs one read and one write, no alias listing. A read that finds a
collection is checked by its name stamp (`NAME_METADATA_KEY`, written by this gateway at
creation and with every metadata update): a read through an alias returns the target,
stamped with the target's name, so only an unstamped or mis-stamped answer lists the
aliases (`_not_an_alias`). The other writes list them before every call.

Every failure is translated (`errors`, `local`) into a short message that never carries the
API key. Conversions are in `convert`, local-mode shims in `local`; the gateway knows
nothing of the pool that shares it (nor of the limiter and breaker it is handed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from vectorschema.api import Datatype, VectorType
from vectorschema.core.schema import (
    IN_PLACE_VECTORS_SINCE,
    Capabilities,
    CollectionSettings,
    ObservedCollection,
    VectorDef,
)
from vectorschema.qdrant import convert, errors, local
from vectorschema.qdrant.breaker import Breaker, BreakerOpen
from vectorschema.qdrant.errors import (
    CollectionIsAlias,
    CollectionNotFound,
    GatewayError,
    QdrantRejected,
    QdrantTimeout,
    QdrantUnavailable,
)
from vectorschema.qdrant.limits import CallLimiter, LimitTimeout

if TYPE_CHECKING:
    from vectorschema.qdrant.protocol import QdrantGateway

_log = logging.getLogger(__name__)

T = TypeVar("T")

# Page size of the scroll fallback of `count_with_vector`.
SCROLL_PAGE = 1000
# Pages an estimated scroll count reads before extrapolating to the whole collection.
ESTIMATE_PAGES = 5
DEFAULT_TIMEOUT = 10.0
DEFAULT_COUNT_TIMEOUT = 5.0
#: The collection's own name, stamped by the gateway (see the module docstring); callers
#: never see it in `observe` and cannot set it.
NAME_METADATA_KEY = "vectorschema.dev/collection"
#: Qdrant refuses a collection named like an alias, and an alias named like a collection.
DISJOINT_NAMES_SINCE = (1, 1)
#: How Qdrant (and local mode) refuse to create a collection named like an alias.
_ALIAS_TAKEN = re.compile(r"(: Alias \S+|Alias with the same name) already exists")


@dataclass(frozen=True)
class Target:
    """Which Qdrant: a server `url` (with its `api_key`), or a local store at `path`
    (None: the default path). Checked once, here, for every way of opening one."""

    url: str | None = None
    api_key: str | None = None
    path: str | None = None

    def __post_init__(self) -> None:
        if self.url is not None and self.path is not None:
            raise ValueError("give a Qdrant url or a local path, not both")
        if self.url is None and self.api_key is not None:
            raise ValueError("an API key only applies to a Qdrant url")


class ClientGateway:
    """`QdrantGateway` over one `QdrantClient` (see the module docstring)."""

    def __init__(
        self,
        client: QdrantClient,
        *,
        location: str,
        local: bool,
        limiter: CallLimiter | None = None,
        breaker: Breaker | None = None,
        count_timeout: float = DEFAULT_COUNT_TIMEOUT,
    ) -> None:
        """`location` is shown in messages: a redacted url or a local path, never a key.
        A remote gateway without a limiter or breaker gets its own (tests); the pool hands
        every gateway of one server the same ones."""
        self._client = client
        self._location = location
        self._local = local
        self._lock = threading.RLock()  # the local store's only
        self._limiter = None if local else (limiter or CallLimiter())
        self._breaker = None if local else (breaker or Breaker(f"Qdrant at {location}"))
        self._count_timeout = count_timeout
        self._capabilities: Capabilities | None = None
        self._capabilities_lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        *,
        url: str | None = None,
        api_key: str | None = None,
        path: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> ClientGateway:
        """A new gateway (see `pool.connect` for the shared one). Does no I/O for a url."""
        return cls.open_target(Target(url=url, api_key=api_key, path=path), timeout=timeout)

    @classmethod
    def open_target(
        cls,
        target: Target,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        limiter: CallLimiter | None = None,
        breaker: Breaker | None = None,
        count_timeout: float = DEFAULT_COUNT_TIMEOUT,
    ) -> ClientGateway:
        """`timeout` bounds every call to a server (connect, and each read)."""
        if target.url is None:
            location = local.resolve_path(target.path)
            return cls(local.open_client(location), location=location, local=True)
        shown = errors.redact_url(target.url)
        limiter = limiter or CallLimiter(wait_timeout=timeout)
        try:
            client = QdrantClient(
                url=target.url,
                api_key=target.api_key,
                timeout=max(1, math.ceil(timeout)),
                check_compatibility=False,
                pool_size=limiter.max_in_flight,
            )
        except ValueError:
            raise ValueError(f"invalid Qdrant url {shown!r}") from None
        return cls(
            client,
            location=shown,
            local=False,
            limiter=limiter,
            breaker=breaker,
            count_timeout=count_timeout,
        )

    # -- plumbing -------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """The redacted url, or the local store's path."""
        return self._location

    @property
    def local(self) -> bool:
        return self._local

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        mode = "local" if self._local else "remote"
        return f"ClientGateway({mode} {self._location!r})"

    def _where(self) -> str:
        return local.shown(self._location) if self._local else f"Qdrant at {self._location}"

    @property
    def breaker(self) -> Breaker | None:
        """The server's breaker (None for a local store)."""
        return self._breaker

    @property
    def limiter(self) -> CallLimiter | None:
        """The server's call limiter (None for a local store)."""
        return self._limiter

    def _serial(self, collection: str | None) -> contextlib.AbstractContextManager[object]:
        """Held across the calls of one step: the local store's lock, or the collection's
        lane on a server (re-entrant for the thread that holds it)."""
        if self._limiter is None:
            return self._lock
        if collection is None:
            return contextlib.nullcontext()
        return self._limiter.lane(collection)

    def _call(self, what: str, fn: Callable[[], T], *, collection: str | None = None) -> T:
        """Run one client call, translating its failures.

        The translated error is raised outside the `except` block, so the original
        exception (whose request may carry the api-key header) is neither its cause nor its
        context.
        """
        if self._closed:
            raise GatewayError(f"{self._where()}: the gateway is closed")
        if self._limiter is None or self._breaker is None:
            with self._lock:
                return self._translated(what, fn, collection)
        return self._guarded(self._limiter, self._breaker, what, fn, collection)

    def _guarded(
        self,
        limiter: CallLimiter,
        breaker: Breaker,
        what: str,
        fn: Callable[[], T],
        collection: str | None,
    ) -> T:
        """A server call: refused at once while the server is known down, else run in the
        collection's lane within the server's in-flight bound, its outcome told to the
        breaker (an answer of any kind but 5xx means the server is up)."""
        error: GatewayError
        try:
            breaker.check()  # no point queueing for a call that cannot go
            with self._serial(collection), limiter.slot():
                permit = breaker.admit()
                try:
                    result = self._translated(what, fn, collection)
                except QdrantUnavailable as exc:
                    breaker.failure(permit, str(exc))
                    raise
                except GatewayError:
                    breaker.success(permit)
                    limiter.answered()
                    raise
                except BaseException:
                    breaker.release(permit)
                    raise
                breaker.success(permit)
                limiter.answered()
                return result
        except BreakerOpen as exc:
            error = QdrantUnavailable(str(exc))
        except LimitTimeout as exc:
            error = QdrantUnavailable(f"{self._where()} is saturated: {exc}")
        raise error

    def _translated(self, what: str, fn: Callable[[], T], collection: str | None) -> T:
        try:
            return fn()
        except Exception as exc:
            where = self._where()
            error = errors.translate(exc, what, where, collection)
            if error is None and self._local:
                error = local.translate(exc, what, where, collection)
            if error is None:
                raise
        raise error

    def _get_collection(self, collection: str) -> qm.CollectionInfo:
        return self._call(
            "read the collection",
            lambda: self._client.get_collection(collection),
            collection=collection,
        )

    def _not_an_alias(self, collection: str) -> None:
        """Refuse `collection` when it is an alias on the server (see the module
        docstring). The alias's target is another tenant's business: never named."""
        listed = self._call("read the aliases", self._client.get_aliases, collection=collection)
        if any(alias.alias_name == collection for alias in listed.aliases):
            raise self._is_alias(collection)

    def _is_alias(self, collection: str) -> CollectionIsAlias:
        return CollectionIsAlias(
            f"spec.collectionName: {collection!r} is an alias on {self._where()}, not a "
            "collection; the operator does not follow aliases: name a collection"
        )

    def _names_disjoint(self) -> bool:
        """Whether this Qdrant refuses a collection named like an alias (local mode, and
        servers since 1.1); otherwise every call lists the aliases first."""
        if self._local:
            return True
        version = convert.parse_version(self.capabilities().server_version)
        return version is not None and version >= DISJOINT_NAMES_SINCE

    # -- QdrantGateway -------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        if self._capabilities is not None:
            return self._capabilities
        # Read once: the many passes that start together wait for the first one's read
        # instead of each sending its own (a burst of new Namespaces, a restart).
        with self._capabilities_lock:
            if self._capabilities is None:
                info = self._call("read its version", self._client.info)
                version = convert.parse_version(info.version)
                self._capabilities = Capabilities(
                    server_version=info.version,
                    in_place_vectors=version is not None and version >= IN_PLACE_VECTORS_SINCE,
                    tunes_vectors=not self._local,
                )
            return self._capabilities

    def observe(self, collection: str) -> ObservedCollection | None:
        disjoint = self._names_disjoint()
        if not disjoint:
            self._not_an_alias(collection)
        try:
            info = self._get_collection(collection)
        except CollectionNotFound:
            return None  # Qdrant follows an alias on a read: no alias of that name either
        metadata = dict(info.config.metadata or {})
        if metadata.pop(NAME_METADATA_KEY, None) != collection and disjoint:
            self._not_an_alias(collection)  # not stamped with this name: maybe an alias
        metadata, datatypes = local.split_datatypes(metadata)
        metadata, recorded = local.split_settings(metadata)
        observed = convert.observed(collection, info, metadata=metadata, datatypes=datatypes)
        if self._local:
            # local mode keeps no cluster settings: report what was asked at creation
            return dataclasses.replace(observed, settings=recorded)
        return observed

    def count_with_vector(self, collection: str, vector: str, exact: bool = True) -> int:
        """Points carrying `vector`. Exact counts get `count_timeout` (a server-side limit,
        and a deadline for the scroll fallback) and raise `QdrantTimeout` past it; with
        `exact=False` the server estimates (from its index statistics)."""
        self._not_an_alias(collection)
        flt = qm.Filter(must=[qm.HasVectorCondition(has_vector=vector)])
        budget = max(1, math.ceil(self._count_timeout)) if exact else None
        try:
            result = self._call(
                f"count points with vector {vector!r}",
                lambda: self._client.count(
                    collection, count_filter=flt, exact=exact, timeout=budget
                ),
                collection=collection,
            )
        except QdrantRejected:
            # servers without `has_vector` filters: count by scrolling that vector
            _log.debug("has_vector count refused by %s; counting by scroll", self._where())
            return self._count_by_scroll(collection, vector, exact=exact)
        return result.count

    def _count_by_scroll(self, collection: str, vector: str, *, exact: bool = True) -> int:
        """Count by scrolling pages with only that vector: slow, always available. Exact
        within `count_timeout`; an estimate extrapolates from the first pages."""
        deadline = time.monotonic() + self._count_timeout
        total = scanned = pages = 0
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
            pages += 1
            scanned += len(records)
            for record in records:
                if isinstance(record.vector, dict):
                    total += vector in record.vector
                elif record.vector is not None and vector == "":
                    total += 1
            if offset is None:
                return total
            if not exact and pages >= ESTIMATE_PAGES:
                points = self._get_collection(collection).points_count or scanned
                return round(total * points / scanned) if scanned else 0
            if exact and time.monotonic() > deadline:
                raise QdrantTimeout(
                    f"{self._where()} took more than {self._count_timeout:g}s to count the "
                    f"points with vector {vector!r}"
                )

    def create_collection(
        self,
        collection: str,
        vectors: Sequence[VectorDef],
        settings: CollectionSettings,
        metadata: Mapping[str, Any],
    ) -> None:
        dense = {
            v.name: convert.vector_params(v) for v in vectors if v.type is not VectorType.SPARSE
        }
        sparse = {v.name: convert.sparse_params(v) for v in vectors if v.type is VectorType.SPARSE}
        if not self._names_disjoint():
            self._not_an_alias(collection)
        metadata = {**metadata, NAME_METADATA_KEY: collection}
        if self._local:
            metadata = {**metadata, **local.settings_metadata(settings)}
        try:
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
        except QdrantRejected as exc:
            if _ALIAS_TAKEN.search(str(exc)):  # Qdrant's own check, atomic with the create
                raise self._is_alias(collection) from None
            raise

    def delete_collection(self, collection: str) -> None:
        self._not_an_alias(collection)
        with contextlib.suppress(CollectionNotFound):
            self._call(
                "delete the collection",
                lambda: self._client.delete_collection(collection),
                collection=collection,
            )

    def create_vector(self, collection: str, vector: VectorDef) -> None:
        # Everything is converted (and so validated) before the first write.
        if vector.type is VectorType.SPARSE:
            index = convert.sparse_index(vector, with_datatype=False)
            tuning = None
        else:
            index = None
            tuning = qm.VectorParamsDiff(
                hnsw_config=convert.hnsw(vector),
                quantization_config=convert.quantization(vector),
                on_disk=vector.on_disk,
            )
        config = convert.vector_name_config(vector)
        with self._serial(collection):
            self._not_an_alias(collection)
            self._call(
                f"create vector {vector.name!r}",
                lambda: self._client.create_vector_name(collection, vector.name, config),
                collection=collection,
            )
            if self._local:
                self._remember_local_datatype(collection, vector.name, vector.datatype)
            if index is not None:
                self._update_sparse_index(collection, vector.name, index)
            elif tuning is not None and vector.has_tuning:
                self._call(
                    f"tune vector {vector.name!r}",
                    lambda: self._client.update_collection(
                        collection, vectors_config={vector.name: tuning}
                    ),
                    collection=collection,
                )

    def delete_vector(self, collection: str, vector: str) -> None:
        with self._serial(collection):
            self._not_an_alias(collection)
            self._call(
                f"delete vector {vector!r}",
                lambda: self._client.delete_vector_name(collection, vector),
                collection=collection,
            )
            if self._local:
                self._remember_local_datatype(collection, vector, None)

    def update_vector(self, collection: str, vector: VectorDef) -> None:
        """Set the vector's tuning to `vector`'s: unset quantization is removed.

        Dense: the HNSW settings `vector` sets are applied and the others kept (Qdrant has
        no way to drop a per-vector HNSW override: the planner reads unset as no opinion),
        `Disabled` removes its quantization; `on_disk None` leaves the flag as it is.
        Sparse: the index's fullScanThreshold / onDisk are set (unset ones are kept).
        """
        self._not_an_alias(collection)
        if vector.type is VectorType.SPARSE:
            index = convert.sparse_index(vector, with_datatype=False)
            if index is not None:
                self._update_sparse_index(collection, vector.name, index)
            return
        quantization: qm.QuantizationConfigDiff = (
            convert.quantization(vector) or qm.Disabled.DISABLED
        )
        diff = qm.VectorParamsDiff(
            hnsw_config=convert.hnsw(vector) or qm.HnswConfigDiff(),
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

    def check(self, vectors: Sequence[VectorDef]) -> None:
        convert.check_vectors(vectors)

    def set_metadata(self, collection: str, metadata: Mapping[str, Any]) -> None:
        """Merge `metadata` into the collection's; a `None` value deletes that key."""
        update = {
            k: v
            for k, v in metadata.items()
            if k not in local.RESERVED_METADATA_KEYS and k != NAME_METADATA_KEY
        }
        with self._serial(collection):
            self._not_an_alias(collection)
            if any(v is None for v in update.values()):
                # Deleting a key that is not there must not store a null (local mode does,
                # when the collection has no metadata at all): send only real deletions.
                current = self._get_collection(collection).config.metadata or {}
                update = {k: v for k, v in update.items() if v is not None or k in current}
            if not update:
                return
            update[NAME_METADATA_KEY] = collection  # a collection made before the stamp
            self._call(
                "update the collection metadata",
                lambda: self._client.update_collection(collection, metadata=update),
                collection=collection,
            )

    def _remember_local_datatype(
        self, collection: str, vector: str, datatype: Datatype | None
    ) -> None:
        """Local mode drops the datatype of vectors made in place: keep it in metadata."""
        current = self._get_collection(collection).config.metadata
        update = local.datatypes_update(current, vector, datatype)
        if update is None:
            return
        self._call(
            "update the collection metadata",
            lambda: self._client.update_collection(collection, metadata=update),
            collection=collection,
        )

    def close(self) -> None:
        """Close the client; calls in flight on a server fail, later ones are refused."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(Exception):
                self._client.close()


if TYPE_CHECKING:

    def _conforms(gateway: ClientGateway) -> QdrantGateway:
        return gateway
