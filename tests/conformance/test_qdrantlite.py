"""qdrantlite (tools/devenv/qdrantlite.py), the Qdrant the operator's Pods share on the
local node: it passes the gateway's conformance suite as a *remote* backend (every test
applies: per-vector tuning, in-place vectors, the API key), and serves what a backfill
program does with points (upsert, update_vectors, scroll, count, aliases), over HTTP with
qdrant-client's REST transport."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

from devenv.qdrantlite import Server

REPO = Path(__file__).resolve().parents[2]
KEY = "qlite-test-key-0123456789"


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server(api_key=KEY).start()
    yield s
    s.stop()


@pytest.fixture
def client(server: Server) -> Iterator[QdrantClient]:
    c = QdrantClient(url=server.url, api_key=KEY, https=False, check_compatibility=False)
    yield c
    c.close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_passes_the_conformance_suite_as_a_remote_server(server: Server) -> None:
    env = {
        **os.environ,
        "CONFORMANCE_QDRANT_URL": server.url,
        "CONFORMANCE_QDRANT_API_KEY": KEY,
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
         "tests/conformance/test_contract.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "deselected" not in out and "not applicable" not in out, out[-2000:]


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_a_backfill_program_fills_a_vector_added_in_place(client: QdrantClient) -> None:
    client.create_collection(
        "c", vectors_config={"text": qm.VectorParams(size=3, distance=qm.Distance.COSINE)}
    )
    client.upsert(
        "c",
        [qm.PointStruct(id=i, vector={"text": [1.0, 2.0, float(i)]}, payload={"doc": i})
         for i in range(25)],
    )  # fmt: skip
    client.create_vector_name(
        "c", "image", qm.DenseVectorNameConfig(dense=qm.DenseVectorConfig(size=2, distance="Dot"))
    )
    has_image = qm.Filter(must=[qm.HasVectorCondition(has_vector="image")])
    assert client.count("c", count_filter=has_image).count == 0
    offset = None
    while True:  # what a backfill Job does: page through, write the new vector
        records, offset = client.scroll("c", limit=10, offset=offset, with_payload=True)
        client.update_vectors(
            "c", [qm.PointVectors(id=r.id, vector={"image": [float(r.payload["doc"]), 1.0]})
                  for r in records if r.payload is not None],
        )  # fmt: skip
        if offset is None:
            break
    assert client.count("c", count_filter=has_image).count == 25
    assert client.count("c").count == 25
    (point,) = client.retrieve("c", [7], with_vectors=True)
    assert isinstance(point.vector, dict) and set(point.vector) == {"text", "image"}
    assert point.vector["image"] == [7.0, 1.0]
    assert point.payload == {"doc": 7}

    client.update_collection_aliases(
        [qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name="c", alias_name="a"))]
    )
    assert [a.alias_name for a in client.get_aliases().aliases] == ["a"]
    assert client.collection_exists("a") and client.count("a").count == 25
    client.delete("c", qm.PointIdsList(points=[0, 1]))
    assert client.count("c").count == 23


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_refuses_a_wrong_or_missing_api_key(server: Server) -> None:
    for key in ("wrong-key", None):
        c = QdrantClient(url=server.url, api_key=key, https=False, check_compatibility=False)
        with pytest.raises(UnexpectedResponse) as info:
            c.get_collections()
        assert info.value.status_code == 401
        c.close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_a_malformed_body_is_refused_like_a_server_does(client: QdrantClient) -> None:
    import httpx

    got = httpx.put(
        client._client.rest_uri + "/collections/x",  # type: ignore[union-attr]
        json={"vectors": {"v": {"size": "big", "distance": "Cosine"}}},
        headers={"api-key": KEY},
    )
    assert got.status_code == 400 and "Format error" in got.json()["status"]["error"]
    assert not client.collection_exists("x")


def test_a_store_on_disk_keeps_the_configuration_across_restarts(tmp_path: Path) -> None:
    first = Server(path=str(tmp_path)).start()
    c = QdrantClient(url=first.url, check_compatibility=False)
    c.create_collection("c", vectors_config={}, shard_number=3)
    c.create_vector_name(
        "c", "v", qm.DenseVectorNameConfig(dense=qm.DenseVectorConfig(
            size=4, distance="Dot", datatype=qm.Datatype.FLOAT16))
    )  # fmt: skip
    c.close()
    first.stop()
    second = Server(path=str(tmp_path)).start()
    try:
        c = QdrantClient(url=second.url, check_compatibility=False)
        params = c.get_collection("c").config.params
        assert params.shard_number == 3
        assert isinstance(params.vectors, dict)
        assert params.vectors["v"].datatype == qm.Datatype.FLOAT16
        c.close()
    finally:
        second.stop()
