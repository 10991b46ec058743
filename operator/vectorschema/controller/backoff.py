"""Retry delays per resource: capped exponential backoff with full jitter.

Every failed pass of a resource is retried after a delay drawn from its failure's
`Schedule`: attempt n waits a uniformly random time in
`[floor, max(floor, min(cap, base * 2**(n-1)))]` ("full jitter", with a floor so that no
retry is ever immediate). The draw is tenacity's `wait_random_exponential`, not ours.
A success resets the resource's attempts; so does a change of failure kind (a conflict
after an outage is retried quickly again).

The schedules (seconds; docs/reference/retry-schedule.md is generated from `SCHEDULES`):

| failure        | meaning                                    | floor | base | cap |
|----------------|--------------------------------------------|-------|------|-----|
| unavailable    | Qdrant down or its breaker open, Secret    | 2     | 2    | 300 |
|                | missing, Kubernetes API failing            |       |      |     |
| rejected       | Stalled: Qdrant refused the request        | 30    | 30   | 900 |
| unexpected     | a bug or an unknown error                  | 2     | 2    | 300 |
| conflict       | the object changed while the pass planned  | 0.2   | 0.5  | 30  |
| moved          | the collection vanished under the pass     | 0.5   | 1    | 30  |

Why these: with full jitter the retries of many resources spread evenly over the window
instead of arriving together, and the window grows until it reaches the cap, so 10,000
Namespaces on a server that is down settle at about 10,000 / 150 s = 67 passes a second
in the operator, nearly all of them refused by the server's breaker without any I/O.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum

import tenacity

__all__ = ["SCHEDULES", "Backoff", "RetryKind", "Schedule"]


class RetryKind(StrEnum):
    UNAVAILABLE = "unavailable"
    REJECTED = "rejected"
    UNEXPECTED = "unexpected"
    CONFLICT = "conflict"
    MOVED = "moved"


@dataclass(frozen=True)
class Schedule:
    floor: float
    base: float
    cap: float

    def __post_init__(self) -> None:
        if not 0 < self.floor <= self.cap or self.base <= 0:
            raise ValueError("a schedule needs 0 < floor <= cap and base > 0")

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt `attempt` (1-based) can draw."""
        return max(self.floor, min(self.cap, self.base * 2.0 ** min(max(0, attempt - 1), 64)))

    def delay(self, attempt: int) -> float:
        """A delay for attempt `attempt`, drawn by tenacity (full jitter above the floor)."""
        wait = tenacity.wait_random_exponential(multiplier=self.base, min=self.floor, max=self.cap)
        state = tenacity.RetryCallState(_RETRYING, fn=None, args=(), kwargs={})
        state.attempt_number = max(1, attempt)
        return float(wait(state))


_RETRYING = tenacity.Retrying()  # only carried by the call state; never runs anything

SCHEDULES: dict[RetryKind, Schedule] = {
    RetryKind.UNAVAILABLE: Schedule(floor=2.0, base=2.0, cap=300.0),
    RetryKind.REJECTED: Schedule(floor=30.0, base=30.0, cap=900.0),
    RetryKind.UNEXPECTED: Schedule(floor=2.0, base=2.0, cap=300.0),
    RetryKind.CONFLICT: Schedule(floor=0.2, base=0.5, cap=30.0),
    RetryKind.MOVED: Schedule(floor=0.5, base=1.0, cap=30.0),
}


class Backoff:
    """Consecutive failures per resource, and the delay before its next attempt."""

    def __init__(self, schedules: dict[RetryKind, Schedule] | None = None) -> None:
        self.schedules = dict(SCHEDULES if schedules is None else schedules)
        self._attempts: dict[Hashable, tuple[RetryKind, int]] = {}
        self._lock = threading.Lock()

    def failed(self, key: Hashable, failure: RetryKind) -> float:
        """Record one more failure of `key`; the delay before it runs again."""
        with self._lock:
            kind, attempts = self._attempts.get(key, (failure, 0))
            attempts = attempts + 1 if kind is failure else 1
            self._attempts[key] = (failure, attempts)
        return self.schedules[failure].delay(attempts)

    def attempts(self, key: Hashable) -> int:
        with self._lock:
            return self._attempts.get(key, (RetryKind.UNEXPECTED, 0))[1]

    def succeeded(self, key: Hashable) -> None:
        with self._lock:
            self._attempts.pop(key, None)

    forget = succeeded


def jittered(interval: float, spread: float = 0.1) -> float:
    """A resync interval +-`spread`, so resources do not resync together."""
    return interval * random.uniform(1 - spread, 1 + spread)
