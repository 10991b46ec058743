"""The gateway against real qdrant-client local mode (no mocks), and an unreachable server."""

from __future__ import annotations

import http.server
import importlib.metadata
import json
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models as qm
from tests.seams import client_of, forget

import vectorschema
from vectorschema.api import Datatype, Distance, VectorSpec, VectorType
from vectorschema.core.schema import (
    CollectionSettings,
    Hnsw,
    Quantization,
    VectorDef,
    vector_def_from_spec,
)
from vectorschema.k8s.connection import default_from_env
from vectorschema.qdrant import client as client_module
from vectorschema.qdrant import local
from vectorschema.qdrant.client import NAME_METADATA_KEY, ClientGateway
from vectorschema.qdrant.convert import parse_version
from vectorschema.qdrant.errors import (
    CollectionNotFound,
    GatewayError,
    QdrantRejected,
    QdrantUnavailable,
)
from vectorschema.qdrant.local import LOCAL_DATATYPES_METADATA_KEY, default_path
from vectorschema.qdrant.pool import close_all, connect
from vectorschema.qdrant.protocol import QdrantGateway


def spec(**fields: Any) -> VectorSpec:
    return VectorSpec.model_validate(fields)


# Every kind of vector a plugin can bring, as the CRD would carry it (camelCase).
SPECS: dict[str, VectorSpec] = {
    "dense": spec(name="text", size=8, distance="Cosine"),
    "dense-float16": spec(name="img", size=4, distance="Dot", datatype="float16"),
    "dense-uint8": spec(name="u8", size=4, distance="Euclid", datatype="uint8"),
    "dense-float32-explicit": spec(name="f32", size=4, distance="Manhattan", datatype="float32"),
    "dense-on-disk": spec(name="disk", size=4, distance="Cosine", onDisk=True),
    "dense-not-on-disk": spec(name="ram", size=4, distance="Cosine", onDisk=False),
    "dense-hnsw": spec(
        name="hnsw",
        size=4,
        distance="Cosine",
        hnsw={"m": 8, "efConstruct": 64, "fullScanThreshold": 1000, "onDisk": True},
    ),
    "dense-hnsw-partial": spec(name="hnsw2", size=4, distance="Dot", hnsw={"m": 0}),
    "dense-hnsw-empty": spec(name="hnsw3", size=4, distance="Dot", hnsw={}),
    "scalar": spec(
        name="sq",
        size=4,
        distance="Cosine",
        quantization={"type": "scalar", "quantile": 0.99, "alwaysRam": True},
    ),
    "scalar-bare": spec(name="sq2", size=4, distance="Cosine", quantization={"type": "scalar"}),
    "binary": spec(
        name="bq", size=4, distance="Dot", quantization={"type": "binary", "alwaysRam": False}
    ),
    "product": spec(
        name="pq", size=4, distance="Euclid", quantization={"type": "product", "compression": "x16"}
    ),
    "multidense": spec(name="colbert", type="multidense", size=3, distance="Dot"),
    "multidense-float16-tuned": spec(
        name="colbert16",
        type="multidense",
        size=3,
        distance="Cosine",
        datatype="float16",
        onDisk=True,
        hnsw={"m": 0},
    ),
    "sparse": spec(name="bm25", type="sparse"),
    "sparse-idf": spec(name="splade", type="sparse", modifier="idf"),
    "sparse-float16-idf": spec(name="sp16", type="sparse", modifier="idf", datatype="float16"),
    "sparse-none-modifier": spec(name="sp0", type="sparse", modifier="none"),
    "sparse-index": spec(
        name="spidx", type="sparse", hnsw={"fullScanThreshold": 500, "onDisk": True}
    ),
}


@pytest.fixture
def gateway() -> Iterator[ClientGateway]:
    g = ClientGateway.open(path=":memory:")
    yield g
    g.close()


def defs(*keys: str) -> list[VectorDef]:
    return [vector_def_from_spec(SPECS[k]) for k in keys]


def upsert(g: ClientGateway, collection: str, points: list[qm.PointStruct]) -> None:
    with client_of(g) as client:
        client.upsert(collection, points)


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(SPECS))
def test_create_then_observe_round_trips_each_kind(gateway: ClientGateway, kind: str) -> None:
    desired = vector_def_from_spec(SPECS[kind])
    gateway.create_collection("c", [desired], CollectionSettings(), {})
    observed = gateway.observe("c")
    assert observed is not None
    assert observed.vectors == (desired,)


def test_all_kinds_in_one_collection_round_trip_and_survive_reopen(tmp_path: Path) -> None:
    desired = defs(*SPECS)
    store = str(tmp_path / "store")
    g = ClientGateway.open(path=store)
    try:
        g.create_collection("all", desired, CollectionSettings(), {"owner": "ns/a"})
        observed = g.observe("all")
        assert observed is not None
        assert observed.by_name == {v.name: v for v in desired}
        assert observed.metadata == {"owner": "ns/a"}
        assert observed.points_count == 0
    finally:
        g.close()
    g = ClientGateway.open(path=store)  # the lock is released by close()
    try:
        reopened = g.observe("all")
        assert reopened is not None
        assert reopened.by_name == {v.name: v for v in desired}
    finally:
        g.close()


@pytest.mark.parametrize("kind", list(SPECS))
def test_create_vector_in_place_round_trips_structure(gateway: ClientGateway, kind: str) -> None:
    desired = vector_def_from_spec(SPECS[kind])
    gateway.create_collection(
        "c", defs("dense") if kind != "dense" else [], CollectionSettings(), {}
    )
    gateway.create_vector("c", desired)
    observed = gateway.observe("c")
    assert observed is not None
    got = observed.by_name[desired.name]
    # datatype too: local mode drops it on create_vector_name, the gateway keeps it
    assert got.structure == desired.structure
    if desired.type is VectorType.SPARSE:
        # sparse index settings are applied by local mode's update_collection
        assert got == desired
    # dense tuning is accepted and ignored by local mode: capabilities().tunes_vectors
    assert not gateway.capabilities().tunes_vectors
    assert LOCAL_DATATYPES_METADATA_KEY not in observed.metadata


def test_local_datatype_memory_is_cleaned_up_on_delete(gateway: ClientGateway) -> None:
    gateway.create_collection("c", defs("dense"), CollectionSettings(), {"k": "v"})
    gateway.create_vector("c", vector_def_from_spec(SPECS["dense-float16"]))
    gateway.create_vector("c", vector_def_from_spec(SPECS["sparse-float16-idf"]))
    with client_of(gateway) as client:
        raw = client.get_collection("c").config.metadata
    settings = local.settings_metadata(CollectionSettings())
    assert raw == {
        "k": "v",
        LOCAL_DATATYPES_METADATA_KEY: {"img": "float16", "sp16": "float16"},
        **settings,
        NAME_METADATA_KEY: "c",
    }
    gateway.delete_vector("c", "img")
    gateway.delete_vector("c", "sp16")
    with client_of(gateway) as client:
        assert client.get_collection("c").config.metadata == {
            "k": "v",
            **settings,
            NAME_METADATA_KEY: "c",
        }
    # re-adding it as float32 is reported as float32, not as the old datatype
    gateway.create_vector("c", vector_def_from_spec(spec(name="img", size=4, distance="Dot")))
    observed = gateway.observe("c")
    assert observed is not None
    assert observed.by_name["img"].datatype is Datatype.FLOAT32


def test_observe_unnamed_vector_and_settings(gateway: ClientGateway) -> None:
    with client_of(gateway) as client:
        client.create_collection(
            "plain",
            vectors_config=qm.VectorParams(size=3, distance=qm.Distance.DOT),
            shard_number=2,
            replication_factor=2,
        )
    observed = gateway.observe("plain")
    assert observed is not None
    assert observed.vectors == (
        VectorDef(name="", type=VectorType.DENSE, size=3, distance=Distance.DOT),
    )
    assert observed.metadata == {}
    # local mode keeps no cluster settings: for a collection made by hand (nothing
    # recorded) it reports what a server defaults to
    assert observed.settings == CollectionSettings(1, 1, 1, True)
    assert gateway.capabilities().reports_cluster_settings


def test_local_mode_records_the_creation_settings(gateway: ClientGateway) -> None:
    """So that a change of one is planned (a recreate), as on a server, never ignored."""
    asked = CollectionSettings(shard_number=3, on_disk_payload=False)
    gateway.create_collection("c", defs("dense"), asked, {"k": "v"})
    observed = gateway.observe("c")
    assert observed is not None
    assert observed.settings == CollectionSettings(3, 1, 1, False)
    assert observed.metadata == {"k": "v"}  # the record is not the collection's metadata
    gateway.set_metadata("c", {local.LOCAL_SETTINGS_METADATA_KEY: None, "k": None})
    observed = gateway.observe("c")
    assert observed is not None and observed.settings == CollectionSettings(3, 1, 1, False)


def test_observe_missing_collection_is_none(gateway: ClientGateway) -> None:
    assert gateway.observe("nope") is None


def test_writes_to_a_missing_collection(gateway: ClientGateway) -> None:
    gateway.delete_collection("nope")  # idempotent
    with pytest.raises(CollectionNotFound):
        gateway.create_vector("nope", vector_def_from_spec(SPECS["dense"]))
    with pytest.raises(CollectionNotFound):
        gateway.delete_vector("nope", "text")
    with pytest.raises(CollectionNotFound):
        gateway.set_metadata("nope", {"a": 1})
    with pytest.raises(CollectionNotFound):
        gateway.count_with_vector("nope", "text")


def test_create_existing_collection_is_rejected(gateway: ClientGateway) -> None:
    gateway.create_collection("c", defs("dense"), CollectionSettings(), {})
    with pytest.raises(QdrantRejected, match="already exists"):
        gateway.create_collection("c", defs("dense"), CollectionSettings(), {})


def test_delete_collection(gateway: ClientGateway) -> None:
    gateway.create_collection("c", defs("dense"), CollectionSettings(), {})
    gateway.delete_collection("c")
    assert gateway.observe("c") is None
    gateway.delete_collection("c")


# --- vectors in place keep the data -------------------------------------------------------


def seed(g: ClientGateway, n: int = 5) -> None:
    g.create_collection("c", defs("dense", "sparse"), CollectionSettings(), {})
    upsert(
        g,
        "c",
        [
            qm.PointStruct(
                id=i,
                vector={
                    "text": [float(i + 1)] * 8,
                    **({"bm25": qm.SparseVector(indices=[i], values=[1.0])} if i % 2 else {}),
                },
                payload={"doc": f"d{i}", "n": i},
            )
            for i in range(n)
        ],
    )


def snapshot(g: ClientGateway) -> dict[Any, tuple[Any, Any]]:
    with client_of(g) as client:
        records, _ = client.scroll("c", limit=100, with_payload=True, with_vectors=["text"])
    return {r.id: (r.payload, r.vector) for r in records}


def test_create_and_delete_vector_keep_other_vectors_and_payloads(gateway: ClientGateway) -> None:
    seed(gateway)
    before = snapshot(gateway)
    assert gateway.count_with_vector("c", "text") == 5
    assert gateway.count_with_vector("c", "bm25") == 2

    gateway.create_vector("c", vector_def_from_spec(SPECS["dense-float16"]))
    gateway.create_vector("c", vector_def_from_spec(SPECS["sparse-idf"]))
    gateway.create_vector("c", vector_def_from_spec(SPECS["multidense"]))
    observed = gateway.observe("c")
    assert observed is not None
    assert observed.points_count == 5
    assert observed.names == ["text", "img", "colbert", "bm25", "splade"]
    assert snapshot(gateway) == before
    # a new vector starts empty on existing points
    assert gateway.count_with_vector("c", "img") == 0
    assert gateway.count_with_vector("c", "splade") == 0
    assert gateway.count_with_vector("c", "colbert") == 0
    assert gateway.count_with_vector("c", "text") == 5

    with client_of(gateway) as client:
        client.update_vectors(
            "c",
            [
                qm.PointVectors(id=0, vector={"img": [1.0, 2.0, 3.0, 4.0]}),
                qm.PointVectors(
                    id=1, vector={"splade": qm.SparseVector(indices=[3], values=[0.5])}
                ),
                qm.PointVectors(id=2, vector={"colbert": [[1.0, 2.0, 3.0]]}),
            ],
        )
    assert gateway.count_with_vector("c", "img") == 1
    assert gateway.count_with_vector("c", "splade") == 1
    assert gateway.count_with_vector("c", "colbert") == 1

    gateway.delete_vector("c", "img")
    gateway.delete_vector("c", "bm25")
    gateway.delete_vector("c", "img")  # deleting a vector that is gone is a no-op
    observed = gateway.observe("c")
    assert observed is not None
    assert observed.names == ["text", "colbert", "splade"]
    assert observed.points_count == 5
    assert snapshot(gateway) == before
    assert gateway.count_with_vector("c", "text") == 5
    assert gateway.count_with_vector("c", "splade") == 1
    assert gateway.count_with_vector("c", "bm25") == 0


def test_create_vector_twice(gateway: ClientGateway) -> None:
    seed(gateway)
    img = vector_def_from_spec(SPECS["dense-float16"])
    gateway.create_vector("c", img)
    gateway.create_vector("c", img)  # identical: a no-op
    with pytest.raises(QdrantRejected, match="different configuration") as info:
        gateway.create_vector("c", VectorDef(**{**img.__dict__, "size": 5}))
    assert "in-memory local Qdrant" in str(info.value)
    with pytest.raises(QdrantRejected):
        gateway.create_vector("c", vector_def_from_spec(spec(name="text", type="sparse")))


def test_count_with_vector_by_scroll_agrees(gateway: ClientGateway) -> None:
    seed(gateway, n=7)
    for name in ("text", "bm25", "missing"):
        assert gateway._count_by_scroll("c", name) == gateway.count_with_vector("c", name)
    assert gateway.count_with_vector("c", "bm25") == 3


def test_count_by_scroll_pages(gateway: ClientGateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "SCROLL_PAGE", 2)
    seed(gateway, n=7)
    assert gateway._count_by_scroll("c", "text") == 7
    assert gateway._count_by_scroll("c", "bm25") == 3


# --- tuning -------------------------------------------------------------------------------


def test_update_vector_sparse_index(gateway: ClientGateway) -> None:
    seed(gateway)
    tuned = vector_def_from_spec(
        spec(name="bm25", type="sparse", hnsw={"fullScanThreshold": 100, "onDisk": True})
    )
    gateway.update_vector("c", tuned)
    observed = gateway.observe("c")
    assert observed is not None
    assert observed.by_name["bm25"] == tuned


def test_update_vector_dense_is_accepted_in_local_mode(gateway: ClientGateway) -> None:
    seed(gateway)
    tuned = vector_def_from_spec(SPECS["dense-hnsw"])
    tuned = VectorDef(**{**tuned.__dict__, "name": "text", "size": 8})
    gateway.update_vector("c", tuned)  # no error; local mode does not apply it
    with pytest.raises(QdrantRejected, match="Not existing vector"):
        gateway.update_vector("c", VectorDef(**{**tuned.__dict__, "name": "nope"}))


def test_sparse_vectors_refuse_settings_they_do_not_have(gateway: ClientGateway) -> None:
    seed(gateway)
    bad = VectorDef(name="sp", type=VectorType.SPARSE, hnsw=Hnsw(m=16))
    with pytest.raises(QdrantRejected, match="no HNSW graph"):
        gateway.create_vector("c", bad)
    with pytest.raises(QdrantRejected, match="no HNSW graph"):
        gateway.create_collection("d", [bad], CollectionSettings(), {})
    observed = gateway.observe("c")
    assert observed is not None and "sp" not in observed.names  # validated before writing


# --- metadata -----------------------------------------------------------------------------


def test_set_metadata_merges_and_deletes(gateway: ClientGateway) -> None:
    gateway.create_collection("c", defs("dense"), CollectionSettings(), {"a": 1, "b": {"x": 1}})
    gateway.set_metadata("c", {"b": {"y": 2}, "c": "three"})
    observed = gateway.observe("c")
    assert observed is not None
    assert observed.metadata == {"a": 1, "b": {"y": 2}, "c": "three"}  # shallow merge
    gateway.set_metadata("c", {"a": None, "zz": None})
    observed = gateway.observe("c")
    assert observed is not None
    assert observed.metadata == {"b": {"y": 2}, "c": "three"}


def test_set_metadata_delete_on_collection_without_metadata(gateway: ClientGateway) -> None:
    # local mode stores {"gone": None} here when asked directly; the gateway does not
    with client_of(gateway) as client:  # made by hand: no metadata at all
        client.create_collection("c", vectors_config={})
    gateway.set_metadata("c", {"gone": None, "kept": "yes"})
    with client_of(gateway) as client:
        # a metadata update also stamps the collection's name (made before the stamp)
        assert client.get_collection("c").config.metadata == {
            "kept": "yes",
            NAME_METADATA_KEY: "c",
        }
    gateway.set_metadata("c", {"kept": None})
    observed = gateway.observe("c")
    assert observed is not None
    assert observed.metadata == {}


def test_local_mode_quirk_still_stores_null_without_the_gateway(gateway: ClientGateway) -> None:
    """If this fails, local mode was fixed and the emulation in set_metadata can go."""
    with client_of(gateway) as client:
        client.create_collection("c", vectors_config={})
        client.update_collection("c", metadata={"gone": None})
        assert client.get_collection("c").config.metadata == {"gone": None}


# --- capabilities -------------------------------------------------------------------------


def test_capabilities_local(gateway: ClientGateway) -> None:
    caps = gateway.capabilities()
    assert caps.server_version == importlib.metadata.version("qdrant-client")
    assert caps.in_place_vectors is True
    assert caps.tunes_vectors is False
    assert caps.reports_cluster_settings is True  # recorded at creation
    assert gateway.capabilities() is caps  # read once


@pytest.mark.parametrize(
    ("version", "expected"),
    [("1.18.0", (1, 18)), ("v1.17.3", (1, 17)), ("1.20.0-dev", (1, 20)), ("unknown", None)],
)
def test_parse_version(version: str, expected: tuple[int, int] | None) -> None:
    assert parse_version(version) == expected


# --- errors -------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_unreachable_server_does_not_leak_the_api_key() -> None:
    key = "s3cr3t-key"
    g = ClientGateway.open(url="http://127.0.0.1:1", api_key=key, timeout=1)
    assert key not in repr(g) and key not in str(g)
    calls: list[Callable[[], object]] = [
        g.capabilities,
        lambda: g.observe("c"),
        lambda: g.count_with_vector("c", "v"),
        lambda: g.create_collection("c", defs("dense"), CollectionSettings(), {}),
        lambda: g.delete_collection("c"),
        lambda: g.create_vector("c", vector_def_from_spec(SPECS["dense"])),
        lambda: g.set_metadata("c", {"a": 1}),
    ]
    try:
        for call in calls:
            with pytest.raises(QdrantUnavailable) as info:
                call()
            error = info.value
            text = "".join(traceback.format_exception(error))
            # the first failures, then the server's breaker repeating the last one
            assert str(error).startswith("Qdrant at http://127.0.0.1:1 is un")
            assert str(error).endswith("is unreachable: connection refused")
            for shown in (str(error), repr(error), text):
                assert key not in shown
            assert error.__cause__ is None and error.__context__ is None
    finally:
        g.close()


def test_url_credentials_are_not_shown() -> None:
    g = ClientGateway.open(url="http://user:pa55@127.0.0.1:1/prefix/?api-key=k3y", timeout=1)
    try:
        assert g.location == "http://127.0.0.1:1/prefix"
        with pytest.raises(QdrantUnavailable) as info:
            g.observe("c")
        text = "".join(traceback.format_exception(info.value)) + repr(g)
        assert "pa55" not in text and "k3y" not in text
    finally:
        g.close()


def test_closed_gateway_refuses_calls() -> None:
    g = ClientGateway.open(path=":memory:")
    g.close()
    g.close()
    with pytest.raises(GatewayError, match="closed"):
        g.observe("c")


# --- connect ------------------------------------------------------------------------------


@pytest.fixture
def clean_cache() -> Iterator[None]:
    close_all()
    yield
    close_all()


def test_connect_shares_one_gateway_per_path(tmp_path: Path, clean_cache: None) -> None:
    store = tmp_path / "store"
    a = connect(path=str(store))
    b = connect(path=str(tmp_path / "." / "store"))
    assert a is b
    assert a.location == str(store.resolve())
    # the store is locked: a second client on it cannot be opened, even in-process
    with pytest.raises(QdrantUnavailable, match="in use by another client"):
        ClientGateway.open(path=str(store))
    assert forget(path=str(store)) is True
    assert forget(path=str(store)) is False
    c = connect(path=str(store))
    assert c is not a
    c.close()  # close() drops it from the cache too
    d = connect(path=str(store))
    assert d is not c


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_connect_memory_and_urls(clean_cache: None) -> None:
    assert connect(path=":memory:") is connect(path=":memory:")
    a = connect(url="http://127.0.0.1:1", api_key="one")
    assert connect(url="http://127.0.0.1:1/", api_key="one") is a
    assert connect(url="http://127.0.0.1:1", api_key="two") is not a
    assert connect(url="http://127.0.0.1:1") is not a
    with pytest.raises(ValueError):
        connect(url="http://127.0.0.1:1", path=":memory:")
    with pytest.raises(ValueError):
        connect(path=":memory:", api_key="k")


def test_default_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_cache: None
) -> None:
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.delenv("QDRANT_API_KEY", raising=False)
    monkeypatch.setenv("QDRANT_PATH", str(tmp_path / "env-store"))
    assert default_path() == str(tmp_path / "env-store")
    g = default_from_env()
    assert g.local and g.location == str((tmp_path / "env-store").resolve())
    assert connect() is g
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:1")
    remote = default_from_env()
    assert not remote.local and remote.location == "http://127.0.0.1:1"


def test_default_path_in_a_source_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QDRANT_PATH", raising=False)
    repo = Path(vectorschema.__file__).resolve().parents[2]
    assert default_path() == str(repo / ".data" / "qdrant")


def test_one_local_client_shared_by_threads(tmp_path: Path) -> None:
    g: QdrantGateway = ClientGateway.open(path=str(tmp_path / "store"))
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            name = f"c{i}"
            g.create_collection(name, defs("dense", "sparse"), CollectionSettings(), {"i": i})
            g.create_vector(name, vector_def_from_spec(SPECS["multidense"]))
            observed = g.observe(name)
            assert observed is not None and observed.metadata == {"i": i}
            assert g.count_with_vector(name, "text") == 0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert g.observe("c5") is not None
    finally:
        g.close()


# --- remote mode against a canned HTTP server on loopback -----------------------------------


class FakeQdrant:
    """Just enough of Qdrant's REST API (canned answers) to drive the remote code paths."""

    def __init__(self, version: str, collections: dict[str, qm.CollectionInfo]) -> None:
        self.version = version
        self.collections = collections
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []
        self.aliases: list[dict[str, str]] = []
        self.alias_checks = 0
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                if self.path.split("?")[0] == "/aliases":
                    fake.alias_checks += 1  # before every call naming a collection
                else:
                    fake.requests.append(
                        (self.command, self.path.split("?")[0], dict(self.headers), body)
                    )
                status, payload = fake.route(self.command, self.path.split("?")[0], body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        ok = {"result": True, "status": "ok", "time": 0.001}
        if path == "/":
            return 200, {"title": "qdrant - vector search engine", "version": self.version}
        if path == "/aliases":
            return 200, {"result": {"aliases": self.aliases}, "status": "ok", "time": 0.001}
        parts = path.strip("/").split("/")
        name = parts[1] if len(parts) > 1 else ""
        if name == "boom":
            return 503, {"status": {"error": "Service Unavailable: shard is recovering"}}
        if name == "forbidden":
            return 403, {"status": {"error": "Forbidden: bad api key"}}
        if name not in self.collections and not (method == "PUT" and len(parts) == 2):
            return 404, {"status": {"error": f"Not found: Collection `{name}` doesn't exist!"}}
        if method == "GET" and len(parts) == 2:
            info = self.collections[name].model_dump(mode="json", exclude_none=True)
            return 200, {"result": info, "status": "ok", "time": 0.001}
        if method in ("PUT", "DELETE") and len(parts) == 4 and parts[2] == "vectors":
            if self.version.startswith("1.17"):
                return 404, ""  # no such route before 1.18
            return 200, {"result": {"operation_id": 1, "status": "completed"}, "status": "ok"}
        if method == "POST" and parts[-1] == "count":
            return 200, {"result": {"count": 42}, "status": "ok", "time": 0.001}
        if method == "PUT" and parts[-1] == "conflict":
            return 400, {"status": {"error": "Wrong input: Collection `conflict` already exists!"}}
        return 200, ok

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def remote_info() -> qm.CollectionInfo:
    """What a server would report for a collection made by hand with a few settings."""
    return qm.CollectionInfo(
        status=qm.CollectionStatus.GREEN,
        optimizer_status=qm.OptimizersStatusOneOf.OK,
        points_count=None,
        segments_count=2,
        payload_schema={},
        config=qm.CollectionConfig(
            params=qm.CollectionParams(
                vectors={
                    "text": qm.VectorParams(
                        size=8,
                        distance=qm.Distance.COSINE,
                        datatype=qm.Datatype.FLOAT32,
                        hnsw_config=qm.HnswConfigDiff(m=8, max_indexing_threads=2),
                        quantization_config=qm.ProductQuantization(
                            product=qm.ProductQuantizationConfig(
                                compression=qm.CompressionRatio.X16
                            )
                        ),
                    ),
                    "cold": qm.VectorParams(
                        size=4, distance=qm.Distance.DOT, memory=qm.Memory.COLD
                    ),
                },
                sparse_vectors={
                    "bm25": qm.SparseVectorParams(
                        modifier=qm.Modifier.NONE,
                        index=qm.SparseIndexParams(datatype=qm.Datatype.FLOAT16),
                    )
                },
                shard_number=3,
                replication_factor=2,
                write_consistency_factor=1,
                on_disk_payload=True,
            ),
            hnsw_config=qm.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10000),
            optimizer_config=qm.OptimizersConfig(
                deleted_threshold=0.2,
                vacuum_min_vector_number=1000,
                default_segment_number=0,
                flush_interval_sec=5,
            ),
            metadata={"vectorschema.dev/owner": "ns/a"},
        ),
    )


@pytest.fixture
def fake_qdrant() -> Iterator[FakeQdrant]:
    fake = FakeQdrant("1.17.2", {"c": remote_info()})
    yield fake
    fake.close()


def test_remote_capabilities_read_once_by_passes_that_start_together(
    fake_qdrant: FakeQdrant,
) -> None:
    """A burst of new Namespaces asks for the server's version at once: one request."""
    answered = threading.Event()
    route = fake_qdrant.route

    def slow_version(method: str, path: str, body: Any) -> tuple[int, Any]:
        if path == "/":
            answered.wait(0.5)  # every caller is inside capabilities() before it answers
        return route(method, path, body)

    fake_qdrant.route = slow_version  # type: ignore[method-assign]
    g = ClientGateway.open(url=fake_qdrant.url, timeout=5)
    start = threading.Barrier(8)
    seen: list[str | None] = []

    def ask() -> None:
        start.wait()
        seen.append(g.capabilities().server_version)

    try:
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    finally:
        g.close()
    assert seen == ["1.17.2"] * 8
    assert [path for _, path, _, _ in fake_qdrant.requests] == ["/"]


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_remote_observe_capabilities_and_errors(fake_qdrant: FakeQdrant) -> None:
    key = "s3cr3t-key"
    g = ClientGateway.open(url=fake_qdrant.url, api_key=key, timeout=2)
    assert fake_qdrant.requests == []  # constructing does no I/O
    try:
        caps = g.capabilities()
        assert (caps.server_version, caps.in_place_vectors) == ("1.17.2", False)
        assert caps.tunes_vectors and caps.reports_cluster_settings

        observed = g.observe("c")
        assert observed is not None
        assert observed.points_count == 0
        assert observed.metadata == {"vectorschema.dev/owner": "ns/a"}
        assert observed.settings == CollectionSettings(3, 2, 1, True)
        assert observed.by_name == {
            "text": VectorDef(
                name="text",
                type=VectorType.DENSE,
                size=8,
                distance=Distance.COSINE,
                hnsw=Hnsw(m=8),
                quantization=Quantization(type="product", compression="x16"),
            ),
            "cold": VectorDef(
                name="cold", type=VectorType.DENSE, size=4, distance=Distance.DOT, on_disk=True
            ),
            "bm25": VectorDef(name="bm25", type=VectorType.SPARSE, datatype=Datatype.FLOAT16),
        }
        assert g.observe("missing") is None
        assert g.count_with_vector("c", "text") == 42
        g.delete_collection("missing")

        with pytest.raises(CollectionNotFound):
            g.create_vector("missing", vector_def_from_spec(SPECS["dense"]))
        with pytest.raises(QdrantRejected, match="HTTP 404") as rejected:
            g.create_vector("c", vector_def_from_spec(SPECS["dense"]))  # 1.17: no such route
        with pytest.raises(QdrantUnavailable, match="HTTP 503: Service Unavailable") as down:
            g.observe("boom")
        with pytest.raises(QdrantRejected, match="HTTP 403, check the API key") as denied:
            g.observe("forbidden")
        with pytest.raises(QdrantRejected, match="already exists") as exists:
            g.create_collection("conflict", defs("dense"), CollectionSettings(), {})
        for info in (rejected, down, denied, exists):
            text = "".join(traceback.format_exception(info.value)) + repr(info.value)
            assert key not in text
        # the key did go to the server, as a header
        assert all(h.get("api-key") == key for _, _, h, _ in fake_qdrant.requests)
    finally:
        g.close()


def test_remote_requests_carry_the_definition(fake_qdrant: FakeQdrant) -> None:
    fake_qdrant.version = "1.18.0"
    g = ClientGateway.open(url=fake_qdrant.url, timeout=2)
    try:
        assert g.capabilities().in_place_vectors
        g.create_collection(
            "new",
            defs("dense-float16", "multidense", "sparse-idf", "scalar"),
            CollectionSettings(shard_number=2, replication_factor=3, on_disk_payload=False),
            {"o": 1},
        )
        _, path, _, body = fake_qdrant.requests[-1]
        assert path == "/collections/new"
        assert body["shard_number"] == 2 and body["replication_factor"] == 3
        assert body["on_disk_payload"] is False
        assert body["metadata"] == {"o": 1, NAME_METADATA_KEY: "new"}
        assert body["vectors"]["img"] == {"size": 4, "distance": "Dot", "datatype": "float16"}
        assert body["vectors"]["colbert"]["multivector_config"] == {"comparator": "max_sim"}
        assert body["vectors"]["sq"]["quantization_config"] == {
            "scalar": {"type": "int8", "quantile": 0.99, "always_ram": True}
        }
        assert body["sparse_vectors"] == {"splade": {"modifier": "idf"}}

        fake_qdrant.requests.clear()
        g.create_vector("c", vector_def_from_spec(SPECS["dense-hnsw"]))
        (m1, p1, _, b1), (m2, p2, _, b2) = fake_qdrant.requests
        assert (m1, p1) == ("PUT", "/collections/c/vectors/hnsw")
        assert b1 == {"dense": {"size": 4, "distance": "Cosine"}}
        assert (m2, p2) == ("PATCH", "/collections/c")
        assert b2 == {
            "vectors": {
                "hnsw": {
                    "hnsw_config": {
                        "m": 8,
                        "ef_construct": 64,
                        "full_scan_threshold": 1000,
                        "on_disk": True,
                    }
                }
            }
        }

        fake_qdrant.requests.clear()
        g.update_vector("c", vector_def_from_spec(spec(name="text", size=8, distance="Cosine")))
        ((method, path, _, body),) = fake_qdrant.requests
        assert (method, path) == ("PATCH", "/collections/c")
        # no tuning wanted: HNSW back to the collection's, quantization off
        assert body == {"vectors": {"text": {"hnsw_config": {}, "quantization_config": "Disabled"}}}

        fake_qdrant.requests.clear()
        checks = fake_qdrant.alias_checks
        g.delete_vector("c", "text")
        g.set_metadata("c", {"a": "b"})
        assert [(m, p, b) for m, p, _, b in fake_qdrant.requests] == [
            ("DELETE", "/collections/c/vectors/text", None),
            ("PATCH", "/collections/c", {"metadata": {"a": "b", NAME_METADATA_KEY: "c"}}),
        ]
        assert fake_qdrant.alias_checks == checks + 2  # the name is checked before each
    finally:
        g.close()
