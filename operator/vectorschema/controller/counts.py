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
    """(server, plan fingerprint) -> AtRisk, at most `max_entries` of them. Thread-safe."""

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, AtRisk] = OrderedDict()
        self._lock = threading.Lock()
        #: Counts actually made (cache misses), since creation.
        self.counted = 0

    def get(self, key: Hashable, count: Callable[[], AtRisk]) -> AtRisk:
        """The cached count for `key`, or `count()` (kept only if it succeeds)."""
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        value = count()  # outside the lock: a slow count must not hold up other plans
        with self._lock:
            self.counted += 1
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value

    def forget_collection(self, collection: str) -> None:
        """Drop the counts of `collection`'s plans (keys ending with its name): its
        resource is gone."""
        with self._lock:
            for key in [
                k for k in self._entries if isinstance(k, tuple) and k[-1:] == (collection,)
            ]:
                del self._entries[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
