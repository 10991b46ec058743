"""Points at risk: counted once per plan, approximately when an exact count is too slow.

While a destructive plan waits for approval, every pass shows how many points it would
lose. Counting them is the one potentially expensive read the operator makes (an exact
filtered count, or a full scroll on servers without `has_vector` filters), so:

- the count is made once per plan fingerprint and kept (a fingerprint pins the collection,
  the observed and desired schemas: same fingerprint, same vectors at risk). A new plan
  (anything changed) counts again. The cache is bounded (least recently used goes first);
- the exact count gets a short time budget; when it runs out, the server's approximate
  count (from its index statistics) is used instead, and the message says "about".
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

__all__ = ["AtRisk", "CountCache", "count_at_risk"]


@dataclass(frozen=True)
class AtRisk:
    """Points a plan would lose; `exact` False when the server estimated them."""

    points: int
    exact: bool = True

    def describe(self) -> str:
        return f"{self.points} point(s)" if self.exact else f"about {self.points} point(s)"


#: (vector, exact) -> number of points carrying that vector.
VectorCounter = Callable[[str, bool], int]


def count_at_risk(
    vectors: Sequence[str],
    count: VectorCounter,
    too_slow: tuple[type[BaseException], ...],
) -> AtRisk:
    """The largest number of points carrying one of `vectors`.

    Exact first; a count that raises one of `too_slow` (a timeout) switches every vector
    to the approximate count. Other errors propagate.
    """
    try:
        return AtRisk(max((count(v, True) for v in vectors), default=0), exact=True)
    except too_slow:
        return AtRisk(max((count(v, False) for v in vectors), default=0), exact=False)


class CountCache:
    """(server, plan fingerprint) -> AtRisk, at most `max_entries` of them (LRU).

    Keyed by the server too: two resources on different servers can have the same plan
    (same collection name, same schemas) over different points. Thread-safe.
    """

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

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
