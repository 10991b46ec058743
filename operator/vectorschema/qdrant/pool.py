"""The process-wide connection pool: one shared `ClientGateway` per Qdrant, and per server
one breaker and one call limiter.

A local store is locked by one process, so everything in this process must go through
one gateway per store; for a server, one client per url and API key keeps connections
pooled. Every gateway of one server (one per API key) shares that server's `Breaker` (a
server that is down is down for every key) and `CallLimiter` (the bound is the server's
capacity, not a key's). The gateways know nothing of this pool: a closed one is simply
replaced on the next `connect`.

Key rotation: a caller that names itself (`user`, e.g. a Namespace) is remembered with the
gateway it last used. When it connects with another key, the gateway of the old key is
closed and evicted as soon as no user is left on it; `release(user)` does the same when
the user goes away.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from vectorschema.qdrant import errors, local
from vectorschema.qdrant.breaker import Breaker, Breakers, BreakerSettings
from vectorschema.qdrant.client import (
    DEFAULT_COUNT_TIMEOUT,
    DEFAULT_TIMEOUT,
    ClientGateway,
    Target,
)
from vectorschema.qdrant.limits import DEFAULT_MAX_IN_FLIGHT, CallLimiter

_log = logging.getLogger(__name__)

Key = tuple[str, ...]


@dataclass(frozen=True)
class Limits:
    """How the pool opens server gateways (the operator's settings set them at startup)."""

    timeout: float = DEFAULT_TIMEOUT  # every call
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT  # per server
    per_tenant: int | None = None  # per server and tenant (None: a quarter of the above)
    count_timeout: float = DEFAULT_COUNT_TIMEOUT  # an exact count of points at risk
    breaker: BreakerSettings = field(default_factory=BreakerSettings)


_limits = Limits()
_gateways: dict[Key, ClientGateway] = {}
_users: dict[Hashable, Key] = {}
_breakers = Breakers()
_limiters: dict[str, CallLimiter] = {}
_lock = threading.Lock()


def configure(limits: Limits) -> None:
    """Set the limits for servers opened from now on (and forget the per-server state)."""
    global _limits
    with _lock:
        _limits = limits
        _breakers.settings = limits.breaker
        _breakers.clear()
        _limiters.clear()


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


def server(url: str) -> str:
    """A server's identity for its breaker and limiter: the redacted url (no key in it)."""
    return errors.redact_url(url)


def connect(
    *,
    url: str | None = None,
    api_key: str | None = None,
    path: str | None = None,
    user: Hashable | None = None,
) -> ClientGateway:
    """The shared gateway for a url (and API key) or a local path, made on first use.

    With neither url nor path: the local store at `local.default_path()`.
    """
    return connect_to(Target(url=url, api_key=api_key, path=path), user=user)


def connect_to(target: Target, *, user: Hashable | None = None) -> ClientGateway:
    k = key(target)
    with _lock:
        gateway = _gateways.get(k)
        if gateway is None or gateway.closed:
            gateway = _open(target, k)
            _gateways[k] = gateway
            _log.info("Using %r", gateway)
        stale = _use(user, k) if user is not None else None
    if stale is not None:
        _log.info("Closing %r: no Namespace uses its API key any more", stale)
        stale.close()
    return gateway


def _open(target: Target, k: Key) -> ClientGateway:
    if target.url is None:
        return ClientGateway.open_target(Target(path=k[1]))
    where = server(target.url)
    limiter = _limiters.get(where)
    if limiter is None:
        limiter = _limiters[where] = CallLimiter(
            _limits.max_in_flight, _limits.timeout, _limits.per_tenant
        )
    return ClientGateway.open_target(
        target,
        timeout=_limits.timeout,
        limiter=limiter,
        breaker=_breakers.get(where, f"Qdrant at {where}"),
        count_timeout=_limits.count_timeout,
    )


def _use(user: Hashable, k: Key) -> ClientGateway | None:
    """Record that `user` now uses `k`; the gateway it leaves, if nobody else uses it."""
    old = _users.get(user)
    _users[user] = k
    if old is None or old == k:
        return None
    return _evict_if_unused(old)


def _evict_if_unused(k: Key) -> ClientGateway | None:
    if k[0] != "url" or k in _users.values():
        return None  # a local store is never closed under the operator; or still used
    return _gateways.pop(k, None)


def release(user: Hashable) -> None:
    """`user` is gone: close the gateway it used if nobody else uses it."""
    with _lock:
        old = _users.pop(user, None)
        stale = _evict_if_unused(old) if old is not None else None
    if stale is not None:
        stale.close()


def sizes() -> dict[str, int]:
    """How many entries each map of the pool holds (observability, the churn test)."""
    with _lock:
        return {
            "gateways": len(_gateways),
            "users": len(_users),
            "limiters": len(_limiters),
            "tenant_shares": sum(limiter.tenants for limiter in _limiters.values()),
        }


def on_recovery(listener: Callable[[str], None]) -> None:
    """Call `listener(location)` (in the thread of the call that found out) each time a
    server that was down answers again; `location` is its gateways' `location`."""
    _breakers.listeners.append(listener)


def breaker_for(location: str) -> Breaker | None:
    """The breaker of the server shown as `location` (a gateway's), if it has one."""
    return _breakers.find(location)


def close_all() -> None:
    """Close and drop every shared gateway (and the per-server state)."""
    with _lock:
        gateways = list(_gateways.values())
        _gateways.clear()
        _users.clear()
        _breakers.clear()
        _limiters.clear()
    for gateway in gateways:
        gateway.close()
