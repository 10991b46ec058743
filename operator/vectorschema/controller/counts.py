"""Points at risk, counted once per plan and kept.

While a destructive plan waits for approval, every pass shows how many points it would
lose. Counting them is the one potentially expensive read the operator makes (an exact
filtered count, or a full scroll on servers without `has_vector` filters), so the count
(`core.report.points_at_risk`: exact, or Qdrant's estimate when exact is too slow) is made
once per plan and kept here, keyed by the server, the plan's fingerprint and the
collection (dropped with the resource: `forget_collection`) (a fingerprint
pins the collection and both schemas: same fingerprint, same vectors at risk). A new plan,
or another server with a plan of the same name, counts again. The cache is bounded (least
recently used goes first) and lives as long as the process: the number shown is the one
from when the plan first appeared.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from vectorschema.core.actions import AtRisk

__all__ = ["CountCache"]


class CountCache:
    """(server, plan fingerprint, collection) -> AtRisk, kept per tenant (Kubernetes
    namespace): at most `per_tenant` entries of one tenant (its least recently used go
    first) and `max_entries` in all (then the least recently used of the tenant holding
    the most go first), so a tenant churning plans evicts its own counts, never another
    tenant's (each of which may be an expensive count again). Thread-safe."""

    def __init__(self, max_entries: int = 4096, per_tenant: int = 256) -> None:
        if max_entries < 1 or per_tenant < 1:
            raise ValueError("max_entries and per_tenant must be at least 1")
        self.max_entries = max_entries
        self.per_tenant = per_tenant
        self._tenants: dict[str, OrderedDict[Hashable, AtRisk]] = {}
        self._size = 0
        self._lock = threading.Lock()
        #: Counts actually made (cache misses), since creation.
        self.counted = 0

    def get(self, key: Hashable, count: Callable[[], AtRisk], tenant: str = "") -> AtRisk:
        """The cached count for `key` (of `tenant`), or `count()` (kept only if it
        succeeds)."""
        with self._lock:
            entries = self._tenants.get(tenant)
            hit = entries.get(key) if entries is not None else None
            if entries is not None and hit is not None:
                entries.move_to_end(key)
                return hit
        value = count()  # outside the lock: a slow count must not hold up other plans
        with self._lock:
            self.counted += 1
            entries = self._tenants.setdefault(tenant, OrderedDict())
            if key not in entries:
                self._size += 1
            entries[key] = value
            entries.move_to_end(key)
            while len(entries) > self.per_tenant:
                self._drop(tenant)
            while self._size > self.max_entries:
                self._drop(max(self._tenants, key=lambda t: len(self._tenants[t])))
        return value

    def _drop(self, tenant: str) -> None:
        entries = self._tenants[tenant]
        entries.popitem(last=False)
        self._size -= 1
        if not entries:
            del self._tenants[tenant]

    def forget_collection(self, collection: str) -> None:
        """Drop the counts of `collection`'s plans (keys ending with its name): its
        resource is gone."""
        with self._lock:
            for tenant, entries in list(self._tenants.items()):
                for key in [k for k in entries if isinstance(k, tuple) and k[-1:] == (collection,)]:
                    del entries[key]
                    self._size -= 1
                if not entries:
                    del self._tenants[tenant]

    def __len__(self) -> int:
        with self._lock:
            return self._size

    def clear(self) -> None:
        with self._lock:
            self._tenants.clear()
            self._size = 0
