"""The gateway contract: what the operator relies on from any Qdrant it manages.

Every test goes through the gateway only (seeding points through `gateway.raw()`), so a
server that passes here runs the operator's plans the way its tests expect.
"""

from __future__ import annotations

import contextlib
import traceback
from collections import Counter
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from qdrant_client import models as qm
from tests.conformance.backends import Backend
from tests.seams import client_of

from vectorschema.api import Datatype, VectorSpec, VectorType
from vectorschema.core.schema import CollectionSettings, VectorDef, vector_def_from_spec
from vectorschema.qdrant.client import ClientGateway
from vectorschema.qdrant.errors import (
    CollectionIsAlias,
    CollectionNotFound,
    QdrantRejected,
    QdrantUnavailable,
)


def vdef(**fields: Any) -> VectorDef:
    return vector_def_from_spec(VectorSpec.model_validate(fields))


TEXT = vdef(name="text", size=8, distance="Cosine")
BM25 = vdef(name="bm25", type="sparse")

# One of each kind a plugin can bring, with the settings a plugin can give it.
KINDS: dict[str, VectorDef] = {
    "dense": vdef(name="d", size=4, distance="Dot"),
    "dense-float16": vdef(name="d16", size=4, distance="Cosine", datatype="float16"),
    "dense-uint8": vdef(name="du8", size=4, distance="Euclid", datatype="uint8"),
    "dense-on-disk": vdef(name="dd", size=4, distance="Cosine", onDisk=True),
    "dense-hnsw": vdef(
        name="dh", size=4, distance="Cosine", hnsw={"m": 8, "efConstruct": 64, "onDisk": True}
    ),
    "multidense": vdef(name="md", type="multidense", size=3, distance="Dot"),
    "multidense-float16": vdef(
        name="md16", type="multidense", size=3, distance="Cosine", datatype="float16"
    ),
    "sparse": vdef(name="sp", type="sparse"),
    "sparse-idf-float16": vdef(name="sp16", type="sparse", modifier="idf", datatype="float16"),
    "sparse-index": vdef(
        name="spi", type="sparse", hnsw={"fullScanThreshold": 500, "onDisk": True}
    ),
}
QUANTIZATIONS: dict[str, dict[str, Any]] = {
    "scalar": {"type": "scalar", "quantile": 0.99, "alwaysRam": True},
    "binary": {"type": "binary", "alwaysRam": False},
    "product": {"type": "product", "compression": "x16"},
}
IN_PLACE = ["dense", "dense-float16", "multidense", "sparse", "sparse-idf-float16"]


def seed(gateway: ClientGateway, collection: str, n: int = 6) -> None:
    """A collection with `text` on every point and `bm25` on the odd ones."""
    gateway.create_collection(collection, [TEXT, BM25], CollectionSettings(), {})
    points = [
        qm.PointStruct(
            id=i,
            vector={
                "text": [float(i + 1)] * 8,
                **({"bm25": qm.SparseVector(indices=[i], values=[1.0])} if i % 2 else {}),
            },
            payload={"doc": f"d{i}"},
        )
        for i in range(n)
    ]
    with client_of(gateway) as client:
        client.upsert(collection, points, wait=True)


def payloads(gateway: ClientGateway, collection: str) -> dict[Any, Any]:
    with client_of(gateway) as client:
        records, _ = client.scroll(collection, limit=100, with_payload=True, with_vectors=["text"])
    return {r.id: (r.payload, r.vector) for r in records}


# --- create -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_create_round_trips(gateway: ClientGateway, collection: str, kind: str) -> None:
    gateway.create_collection(collection, [KINDS[kind]], CollectionSettings(), {})
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.vectors == (KINDS[kind],)
    assert observed.points_count == 0


def test_create_all_kinds_together(gateway: ClientGateway, collection: str) -> None:
    gateway.create_collection(collection, list(KINDS.values()), CollectionSettings(), {})
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.by_name == {v.name: v for v in KINDS.values()}


def test_create_existing_is_rejected(gateway: ClientGateway, collection: str) -> None:
    gateway.create_collection(collection, [TEXT], CollectionSettings(), {})
    with pytest.raises(QdrantRejected, match="already exists"):
        gateway.create_collection(collection, [TEXT], CollectionSettings(), {})


def test_cluster_settings_round_trip(gateway: ClientGateway, collection: str) -> None:
    settings = CollectionSettings(
        shard_number=2, replication_factor=1, write_consistency_factor=1, on_disk_payload=True
    )
    gateway.create_collection(collection, [TEXT], settings, {})
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.settings == settings


# --- vectors in place ---------------------------------------------------------------------


@pytest.mark.needs("in_place_vectors")
@pytest.mark.parametrize("kind", IN_PLACE)
def test_add_in_place_keeps_points(gateway: ClientGateway, collection: str, kind: str) -> None:
    seed(gateway, collection)
    before = payloads(gateway, collection)
    added = KINDS[kind]
    gateway.create_vector(collection, added)
    gateway.create_vector(collection, added)  # the same again: a no-op
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.points_count == 6
    assert observed.by_name[added.name].structure == added.structure  # datatype included
    assert payloads(gateway, collection) == before
    assert gateway.count_with_vector(collection, added.name) == 0  # new vectors start empty
    assert gateway.count_with_vector(collection, "text") == 6


@pytest.mark.needs("in_place_vectors")
def test_add_in_place_with_another_definition_is_rejected(
    gateway: ClientGateway, collection: str
) -> None:
    seed(gateway, collection)
    with pytest.raises(QdrantRejected):
        gateway.create_vector(collection, vdef(name="text", size=9, distance="Cosine"))


@pytest.mark.needs("in_place_vectors")
@pytest.mark.parametrize("removed", ["text", "bm25"])
def test_remove_in_place_keeps_points_and_the_rest(
    gateway: ClientGateway, collection: str, removed: str
) -> None:
    seed(gateway, collection)
    gateway.create_vector(collection, KINDS["multidense"])
    gateway.delete_vector(collection, removed)
    gateway.delete_vector(collection, removed)  # gone already: a no-op
    observed = gateway.observe(collection)
    assert observed is not None
    assert removed not in observed.names
    assert set(observed.names) == {"text", "bm25", "md"} - {removed}
    assert observed.points_count == 6
    kept = "bm25" if removed == "text" else "text"
    assert gateway.count_with_vector(collection, kept) == (3 if kept == "bm25" else 6)


# --- tuning -------------------------------------------------------------------------------


@pytest.mark.needs("tunes_dense")
def test_tune_dense_in_place(gateway: ClientGateway, collection: str) -> None:
    seed(gateway, collection)
    tuned = vdef(
        name="text",
        size=8,
        distance="Cosine",
        onDisk=True,
        hnsw={"m": 8, "efConstruct": 64},
        quantization=QUANTIZATIONS["scalar"],
    )
    gateway.update_vector(collection, tuned)
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.by_name["text"] == tuned
    # Back to no tuning: quantization is disabled; Qdrant keeps the HNSW override and the
    # on-disk flag (a real 1.18.3 does), so the planner treats "unset" as no opinion and
    # plans nothing more: no update on every pass.
    gateway.update_vector(collection, TEXT)
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.by_name["text"].quantization is None
    assert TEXT.tuning_met_by(observed.by_name["text"])
    assert observed.points_count == 6


def test_tune_sparse_index_in_place(gateway: ClientGateway, collection: str) -> None:
    seed(gateway, collection)
    tuned = vdef(name="bm25", type="sparse", hnsw={"fullScanThreshold": 100, "onDisk": True})
    gateway.update_vector(collection, tuned)
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.by_name["bm25"] == tuned


# --- datatypes and quantization ---------------------------------------------------------------


@pytest.mark.parametrize("datatype", ["float32", "float16", "uint8"])
def test_dense_datatype_round_trips(gateway: ClientGateway, collection: str, datatype: str) -> None:
    v = vdef(name="v", size=4, distance="Dot", datatype=datatype)
    gateway.create_collection(collection, [v], CollectionSettings(), {})
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.by_name["v"].datatype is Datatype(datatype)


@pytest.mark.needs("in_place_vectors")
@pytest.mark.parametrize("datatype", ["float16", "uint8"])
def test_datatype_survives_in_place_add(
    gateway: ClientGateway, collection: str, datatype: str
) -> None:
    seed(gateway, collection)
    gateway.create_vector(collection, vdef(name="v", size=4, distance="Dot", datatype=datatype))
    gateway.create_vector(collection, vdef(name="s", type="sparse", datatype="float16"))
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.by_name["v"].datatype is Datatype(datatype)
    assert observed.by_name["s"].datatype is Datatype.FLOAT16
    assert not any(k.startswith("vectorschema.dev/local") for k in observed.metadata)


@pytest.mark.parametrize("kind", list(QUANTIZATIONS))
def test_quantization_round_trips(gateway: ClientGateway, collection: str, kind: str) -> None:
    v = vdef(name="q", size=16, distance="Cosine", quantization=QUANTIZATIONS[kind])
    gateway.create_collection(collection, [v], CollectionSettings(), {})
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.by_name["q"] == v


@pytest.mark.needs("tunes_dense")
@pytest.mark.parametrize("kind", list(QUANTIZATIONS))
def test_quantization_changes_in_place(gateway: ClientGateway, collection: str, kind: str) -> None:
    gateway.create_collection(
        collection, [vdef(name="q", size=16, distance="Cosine")], CollectionSettings(), {}
    )
    v = vdef(name="q", size=16, distance="Cosine", quantization=QUANTIZATIONS[kind])
    gateway.update_vector(collection, v)
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.by_name["q"] == v


# --- ownership metadata ----------------------------------------------------------------------


def test_ownership_metadata(gateway: ClientGateway, collection: str) -> None:
    owner = {"vectorschema.dev/owner": "team-a/main", "vectorschema.dev/owner-uid": "u-1"}
    gateway.create_collection(collection, [TEXT], CollectionSettings(), owner)
    observed = gateway.observe(collection)
    assert observed is not None and observed.metadata == owner
    # released on Retain: owner stamps replaced, in one merge
    gateway.set_metadata(
        collection,
        {
            "vectorschema.dev/owner": None,
            "vectorschema.dev/owner-uid": None,
            "vectorschema.dev/retained-by": "team-a/main",
        },
    )
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.metadata == {"vectorschema.dev/retained-by": "team-a/main"}
    gateway.set_metadata(collection, {"never-there": None})  # deleting nothing stores nothing
    observed = gateway.observe(collection)
    assert observed is not None
    assert observed.metadata == {"vectorschema.dev/retained-by": "team-a/main"}


def test_metadata_on_a_collection_made_without_any(gateway: ClientGateway, collection: str) -> None:
    gateway.create_collection(collection, [TEXT], CollectionSettings(), {})
    gateway.set_metadata(collection, {"gone": None, "kept": "yes"})
    observed = gateway.observe(collection)
    assert observed is not None and observed.metadata == {"kept": "yes"}


# --- aliases (issue 17, item 7) -------------------------------------------------------------


def test_an_alias_is_refused_before_anything_is_read_or_written(
    gateway: ClientGateway, collection: str
) -> None:
    """An alias inside a tenant's prefix may point at another tenant's collection: every
    call that names it is refused, and the target is never named."""
    owner = {"vectorschema.dev/owner": "team-b/secret"}
    seed(gateway, collection)
    gateway.set_metadata(collection, owner)
    alias = f"{collection}_alias"
    with client_of(gateway) as client:
        client.update_collection_aliases(
            [
                qm.CreateAliasOperation(
                    create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)
                )
            ]
        )
    try:
        calls = {
            "observe": lambda: gateway.observe(alias),
            "count": lambda: gateway.count_with_vector(alias, "text"),
            "create": lambda: gateway.create_collection(alias, [TEXT], CollectionSettings(), {}),
            "add": lambda: gateway.create_vector(alias, KINDS["dense"]),
            "remove": lambda: gateway.delete_vector(alias, "bm25"),
            "tune": lambda: gateway.update_vector(alias, TEXT),
            "stamp": lambda: gateway.set_metadata(alias, {"vectorschema.dev/owner": "team-a/x"}),
            "drop": lambda: gateway.delete_collection(alias),
        }
        for what, call in calls.items():
            with pytest.raises(CollectionIsAlias) as refused:
                call()
            assert alias in str(refused.value), what
            assert f"{collection}'" not in str(refused.value), what  # the target: never named
            assert "team-b" not in str(refused.value), what
        live = gateway.observe(collection)
        assert live is not None and sorted(live.names) == ["bm25", "text"]
        assert live.points_count == 6 and live.metadata == owner
        with client_of(gateway) as client:
            assert [a.alias_name for a in client.get_aliases().aliases] == [alias]
    finally:
        with client_of(gateway) as client:
            client.update_collection_aliases(
                [qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias))]
            )


@contextlib.contextmanager
def counted(gateway: ClientGateway) -> Iterator[Counter[str]]:
    """The client's calls by method while the block runs (the requests a server sees)."""
    calls: Counter[str] = Counter()
    client = gateway._client
    names = ("get_collection", "get_aliases", "create_collection", "update_collection", "info")

    def counting(name: str) -> Any:
        real = getattr(client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return call

    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(mock.patch.object(client, name, counting(name)))
        yield calls


def test_a_new_collection_costs_one_read_and_one_write(
    gateway: ClientGateway, collection: str
) -> None:
    """Issue 19: no alias listing for a new collection (a read Qdrant does not find is no
    alias; Qdrant refuses to create an alias's name), nor for one this gateway stamped."""
    gateway.capabilities()  # the version: one read per gateway, before any pass
    with counted(gateway) as calls:
        assert gateway.observe(collection) is None
        gateway.create_collection(collection, [TEXT], CollectionSettings(), {"k": "v"})
    assert calls == {"get_collection": 1, "create_collection": 1}
    with counted(gateway) as calls:
        observed = gateway.observe(collection)
    assert calls == {"get_collection": 1}
    assert observed is not None and observed.metadata == {"k": "v"}  # the stamp is not shown


def test_a_collection_made_elsewhere_is_checked_against_the_aliases(
    gateway: ClientGateway, collection: str
) -> None:
    """Without this gateway's name stamp, a read may have gone through an alias: it lists
    them; a metadata update stamps the name, and the next read needs no listing."""
    with client_of(gateway) as client:
        client.create_collection(
            collection,
            vectors_config={"text": qm.VectorParams(size=8, distance=qm.Distance.COSINE)},
        )
    gateway.capabilities()
    with counted(gateway) as calls:
        assert gateway.observe(collection) is not None
    assert calls == {"get_collection": 1, "get_aliases": 1}
    gateway.set_metadata(collection, {"vectorschema.dev/collection": "forged", "k": "v"})
    with counted(gateway) as calls:
        observed = gateway.observe(collection)
    assert calls == {"get_collection": 1}
    assert observed is not None and observed.metadata == {"k": "v"}


# --- counts ---------------------------------------------------------------------------------


def test_counts(gateway: ClientGateway, collection: str) -> None:
    seed(gateway, collection, n=9)
    assert gateway.count_with_vector(collection, "text") == 9
    assert gateway.count_with_vector(collection, "bm25") == 4
    # the estimate (what the operator shows as "about N" when exact is too slow)
    assert 0 <= gateway.count_with_vector(collection, "text", exact=False) <= 9 * 2
    observed = gateway.observe(collection)
    assert observed is not None and observed.points_count == 9


# --- delete --------------------------------------------------------------------------------


def test_delete(gateway: ClientGateway, collection: str) -> None:
    seed(gateway, collection)
    gateway.delete_collection(collection)
    assert gateway.observe(collection) is None
    gateway.delete_collection(collection)  # gone already: a no-op


# --- errors ---------------------------------------------------------------------------------


def test_404_missing_collection(gateway: ClientGateway, collection: str) -> None:
    assert gateway.observe(collection) is None
    with pytest.raises(CollectionNotFound):
        gateway.create_vector(collection, TEXT)
    with pytest.raises(CollectionNotFound):
        gateway.delete_vector(collection, "text")
    with pytest.raises(CollectionNotFound):
        gateway.set_metadata(collection, {"a": "b"})
    with pytest.raises(CollectionNotFound):
        gateway.count_with_vector(collection, "text")


@pytest.mark.needs("api_key")
@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_401_wrong_key(backend: Backend, collection: str) -> None:
    wrong = "vsconf-wrong-key-0123456789"
    g = backend.open(api_key=wrong)
    try:
        with pytest.raises(QdrantRejected, match="HTTP 401, check the API key") as info:
            g.observe(collection)
        shown = "".join(traceback.format_exception(info.value)) + repr(info.value)
        assert wrong not in shown
        assert backend.api_key is None or backend.api_key not in shown
    finally:
        g.close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_unreachable_server() -> None:
    """Not the backend under test: a port nothing listens on, with a key that must not leak."""
    g = ClientGateway.open(url="http://127.0.0.1:9", api_key="vsconf-key", timeout=2)
    try:
        with pytest.raises(QdrantUnavailable, match="unreachable") as info:
            g.observe("c")
        assert "vsconf-key" not in "".join(traceback.format_exception(info.value))
        assert info.value.__cause__ is None and info.value.__context__ is None
    finally:
        g.close()


def test_kinds_cover_every_vector_type() -> None:
    assert {v.type for v in KINDS.values()} == set(VectorType)
