"""Test seams into the Qdrant adapter, kept out of its production API.

`client_of()` hands out the qdrant-client client behind a gateway (with its lock held), so a
test or a benchmark can seed points the operator never writes; `forget()` closes and
drops a shared gateway of the pool, so a test can reopen a local store or simulate a
restart. Both reach into private state on purpose: only tests may.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from qdrant_client import QdrantClient

from vectorschema.qdrant import pool
from vectorschema.qdrant.client import ClientGateway, Target


@contextlib.contextmanager
def client_of(gateway: ClientGateway) -> Iterator[QdrantClient]:
    """The client itself, with the gateway's lock held."""
    with gateway._lock:
        yield gateway._client


def forget(*, url: str | None = None, api_key: str | None = None, path: str | None = None) -> bool:
    """Close and drop the shared gateway for these arguments; False if there was none."""
    key = pool.key(Target(url=url, api_key=api_key, path=path))
    with pool._lock:
        gateway = pool._gateways.pop(key, None)
    if gateway is None:
        return False
    gateway.close()
    return True
