"""An example backfill program: fill a plugin's vectors for every point of a collection.

The operator runs it as a Job (`Plugin.spec.backfill.jobTemplate`) after a plan added,
replaced or recreated the plugin's vectors, with the contract's environment:

- `VECTORSCHEMA_COLLECTION`: the Qdrant collection;
- `VECTORSCHEMA_VECTORS`: the vectors to fill, comma-separated;
- `VECTORSCHEMA_RECREATED`: `true` when the collection was recreated (then a real plugin
  re-ingests from its source; this example has none and fills the points that exist);
- `VECTORSCHEMA_COLLECTION_ID`, `VECTORSCHEMA_PLAN`: for logs;
- `QDRANT_URL`, `QDRANT_API_KEY`.

Its vectors are deterministic: computed from a hash of each point's payload (a stand-in
for a model). It meets the contract of a backfill program:

- idempotent: the same point always gets the same vector, so running twice is harmless;
- resumable: it skips points that already carry every listed vector, so a Job restarted
  after a crash (or a Pod evicted half-way) continues where the last one stopped;
- it writes only the listed vectors (`update_vectors`): payloads, other vectors and the
  point count are untouched;
- on failure it exits non-zero and writes one line to /dev/termination-log, which the
  operator shows in `status.reprocess[].message`.

Run it by hand: `QDRANT_URL=http://127.0.0.1:6333 VECTORSCHEMA_COLLECTION=c
VECTORSCHEMA_VECTORS=image python examples/backfill/fill.py`.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

BATCH = 256
TERMINATION_LOG = "/dev/termination-log"


def _floats(seed: bytes, count: int) -> list[float]:
    """`count` floats in [-1, 1) from `seed` (SHA-256 in counter mode)."""
    out: list[float] = []
    block = 0
    while len(out) < count:
        digest = hashlib.sha256(seed + block.to_bytes(4, "big")).digest()
        for (word,) in struct.iter_unpack(">I", digest):
            out.append(word / 2**31 - 1.0)
        block += 1
    return out[:count]


def payload_seed(payload: dict[str, Any] | None, vector: str) -> bytes:
    return json.dumps([vector, payload or {}], sort_keys=True, default=str).encode()


def vector_for(kind: str, size: int, payload: dict[str, Any] | None, name: str) -> Any:
    """The deterministic vector `name` of a point with `payload`."""
    seed = payload_seed(payload, name)
    if kind == "sparse":
        values = _floats(seed, 8)
        indices = sorted({int(abs(v) * 10_000) for v in values})
        return qm.SparseVector(indices=indices, values=[1.0] * len(indices))
    dense = _floats(seed, size)
    if all(v == 0 for v in dense):
        dense[0] = 1.0  # a cosine vector must not be all zeros
    return [dense] if kind == "multidense" else dense


def vector_kinds(
    client: QdrantClient, collection: str, names: Sequence[str]
) -> dict[str, tuple[str, int]]:
    """name -> (dense | multidense | sparse, size), from the live collection."""
    params = client.get_collection(collection).config.params
    dense = params.vectors if isinstance(params.vectors, dict) else {}
    sparse = params.sparse_vectors or {}
    out: dict[str, tuple[str, int]] = {}
    for name in names:
        if name in dense:
            p = dense[name]
            out[name] = ("multidense" if p.multivector_config else "dense", p.size)
        elif name in sparse:
            out[name] = ("sparse", 0)
        else:
            raise LookupError(f"collection {collection} has no vector {name!r}")
    return out


def points(client: QdrantClient, collection: str, names: Sequence[str]) -> Iterator[Any]:
    offset = None
    while True:
        batch, offset = client.scroll(
            collection,
            limit=BATCH,
            offset=offset,
            with_payload=True,
            with_vectors=list(names),
        )
        yield from batch
        if offset is None:
            return


def fill(client: QdrantClient, collection: str, names: Sequence[str]) -> tuple[int, int]:
    """Fill `names` on every point lacking one of them. Returns (filled, skipped)."""
    kinds = vector_kinds(client, collection, names)
    filled = skipped = 0
    pending: list[qm.PointVectors] = []
    for point in points(client, collection, names):
        have = point.vector if isinstance(point.vector, dict) else {}
        missing = [n for n in names if n not in have or have[n] in (None, [], {})]
        if not missing:
            skipped += 1
            continue
        vectors = {n: vector_for(*kinds[n], point.payload, n) for n in missing}
        pending.append(qm.PointVectors(id=point.id, vector=vectors))
        if len(pending) >= BATCH:
            client.update_vectors(collection, pending, wait=True)
            filled += len(pending)
            pending = []
    if pending:
        client.update_vectors(collection, pending, wait=True)
        filled += len(pending)
    return filled, skipped


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    try:
        with open(TERMINATION_LOG, "w") as log:
            log.write(message[:4000])
    except OSError:
        pass
    return 1


def main() -> int:
    collection = os.environ.get("VECTORSCHEMA_COLLECTION", "")
    names = [n for n in os.environ.get("VECTORSCHEMA_VECTORS", "").split(",") if n]
    url = os.environ.get("QDRANT_URL")
    if not collection or not names or not url:
        return _fail("VECTORSCHEMA_COLLECTION, VECTORSCHEMA_VECTORS and QDRANT_URL are required")
    client = QdrantClient(
        url=url, api_key=os.environ.get("QDRANT_API_KEY") or None, check_compatibility=False
    )
    try:
        filled, skipped = fill(client, collection, names)
    except Exception as exc:  # one line for the operator's status
        return _fail(f"backfill of {','.join(names)} in {collection} failed: {exc}")
    finally:
        client.close()
    print(
        f"collection {collection} (id {os.environ.get('VECTORSCHEMA_COLLECTION_ID', '?')}, plan "
        f"{os.environ.get('VECTORSCHEMA_PLAN', '?')}): filled {','.join(names)} on {filled} "
        f"point(s), {skipped} already had them"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
