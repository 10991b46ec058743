"""The process-wide connection pool: one shared `ClientGateway` per Qdrant.

A local store is locked by one process, so everything in this process must go through
one gateway per store; for a server, one client per url and API key keeps connections
pooled. The gateways know nothing of this pool: a closed one is simply replaced on the
next `connect`.
"""

from __future__ import annotations

import hashlib
import logging
import threading

from vectorschema.qdrant import local
from vectorschema.qdrant.client import ClientGateway, Target

_log = logging.getLogger(__name__)

Key = tuple[str, ...]

_gateways: dict[Key, ClientGateway] = {}
_lock = threading.Lock()


def key(target: Target) -> Key:
    """Which gateway serves `target`: the url (and a digest of the API key), or the
    store's resolved path."""
    if target.url is not None:
        digest = (
            hashlib.sha256(target.api_key.encode()).hexdigest()
            if target.api_key is not None
            else ""
        )
        return ("url", target.url.rstrip("/"), digest)
    return ("path", local.resolve_path(target.path))


def connect(
    *,
    url: str | None = None,
    api_key: str | None = None,
    path: str | None = None,
    timeout: float = 10.0,
) -> ClientGateway:
    """The shared gateway for a url (and API key) or a local path, made on first use.

    With neither url nor path: the local store at `local.default_path()`.
    """
    return connect_to(Target(url=url, api_key=api_key, path=path), timeout=timeout)


def connect_to(target: Target, *, timeout: float = 10.0) -> ClientGateway:
    k = key(target)
    with _lock:
        gateway = _gateways.get(k)
        if gateway is None or gateway.closed:
            resolved = target if target.url is not None else Target(path=k[1])
            gateway = ClientGateway.open_target(resolved, timeout=timeout)
            _gateways[k] = gateway
            _log.info("Using %r", gateway)
        return gateway


def close_all() -> None:
    """Close and drop every shared gateway."""
    with _lock:
        gateways = list(_gateways.values())
        _gateways.clear()
    for gateway in gateways:
        gateway.close()
