"""Which Qdrant the conformance suite runs against, and what that backend can do.

See `conftest.py` for how the backend is chosen and why a test may not apply to one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from vectorschema.qdrant.client import ClientGateway

NEEDS_WHY = {
    "tunes_dense": "local mode accepts per-vector tuning and ignores it",
    "in_place_vectors": "servers before 1.18 cannot add or remove a named vector",
    "api_key": "a 401 needs a server with an API key (give QDRANT_API_KEY)",
}


@dataclass(frozen=True)
class Backend:
    name: str
    url: str | None = None
    api_key: str | None = None
    has: frozenset[str] = field(default_factory=frozenset)

    def open(self, *, api_key: str | None = None, timeout: float = 10.0) -> ClientGateway:
        if self.url is None:
            return ClientGateway.open(path=":memory:")
        return ClientGateway.open(url=self.url, api_key=api_key or self.api_key, timeout=timeout)


def _backend() -> Backend:
    url = os.environ.get("CONFORMANCE_QDRANT_URL") or None
    if url is None:
        return Backend("embedded", has=frozenset({"in_place_vectors"}))
    key = os.environ.get("CONFORMANCE_QDRANT_API_KEY") or None
    has = {"tunes_dense"} | ({"api_key"} if key else set())
    probe = ClientGateway.open(url=url, api_key=key)
    try:
        if probe.capabilities().in_place_vectors:
            has.add("in_place_vectors")
    except Exception:
        has.add("in_place_vectors")  # let the tests say what is wrong with the server
    finally:
        probe.close()
    return Backend("remote", url=url, api_key=key, has=frozenset(has))


BACKEND = _backend()
