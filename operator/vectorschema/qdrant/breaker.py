"""A circuit breaker per Qdrant server: a server known to be down gets a few probes, not load.

Without it, every Namespace on a server that is down retries on its own schedule: with
10,000 Namespaces that is hundreds of requests a second against a server that is trying to
come back. With it, the gateway asks the server's breaker before each call:

- **closed** (the normal state): every call goes through. `failure_threshold` consecutive
  failures that say "the server is down" (unreachable, timed out, HTTP 5xx) open it.
- **open**: a call goes through only as a *probe*: at most one every `probe_interval`
  seconds, and at most `max_probes_in_flight` at a time (a blackholed server holds a probe
  until the call's timeout). Every other call fails at once with `QdrantUnavailable`
  carrying the last failure and when the server was last seen down, without any I/O.
  A probe that succeeds closes the breaker; one that fails keeps it open.

So while a server is down, at most `max_probes_in_flight + 1/probe_interval` calls per
second reach it, whatever the number of Namespaces. The breaker only counts failures of the
server, never refusals of a request (4xx): a wrong API key says nothing about the server.

Thread-safe; the lock is held only to read and update counters, never across a call.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Breaker", "BreakerOpen", "BreakerSettings", "Breakers", "Permit", "State"]


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"


class BreakerOpen(Exception):
    """The server is known to be down and this call is not a probe: no I/O was done."""


@dataclass(frozen=True)
class BreakerSettings:
    """Defaults: open after 3 failures in a row; then one probe every 0.5 s, one at a time."""

    failure_threshold: int = 3
    probe_interval: float = 0.5
    max_probes_in_flight: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.max_probes_in_flight < 1:
            raise ValueError("failure_threshold and max_probes_in_flight must be at least 1")
        if self.probe_interval <= 0:
            raise ValueError("probe_interval must be positive")


@dataclass
class Permit:
    """One admitted call; report its outcome with `Breaker.success` / `Breaker.failure`."""

    probe: bool
    settled: bool = False


class Breaker:
    """The breaker of one server (see the module docstring)."""

    def __init__(
        self,
        where: str,
        settings: BreakerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_recovery: Callable[[], None] | None = None,
    ) -> None:
        self.where = where
        self._on_recovery = on_recovery
        self.settings = settings or BreakerSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._state = State.CLOSED
        self._failures = 0  # consecutive server failures while closed
        self._last_error = ""
        self._opened_at = 0.0
        self._next_probe = 0.0
        self._probes_in_flight = 0
        #: How many times it closed again after being open: a caller that failed while it
        #: was open knows the server is back when this moved.
        self.recoveries = 0
        #: Calls admitted (closed or as probes) and refused, since creation.
        self.admitted = 0
        self.refused = 0

    @property
    def state(self) -> State:
        with self._lock:
            return self._state

    def check(self) -> None:
        """Raise `BreakerOpen` if a call now would be refused; uses up nothing. For callers
        about to wait (for a slot): no point waiting for a call that cannot go."""
        with self._lock:
            if self._state is State.OPEN and not self._probe_due(self._clock()):
                self.refused += 1
                raise self._refusal()

    def admit(self) -> Permit:
        """Admit one call, or raise `BreakerOpen` (a message safe to show) without I/O."""
        with self._lock:
            if self._state is State.CLOSED:
                self.admitted += 1
                return Permit(probe=False)
            now = self._clock()
            if self._probe_due(now):
                self._next_probe = now + self.settings.probe_interval
                self._probes_in_flight += 1
                self.admitted += 1
                return Permit(probe=True)
            self.refused += 1
            raise self._refusal()

    def _probe_due(self, now: float) -> bool:
        return now >= self._next_probe and (
            self._probes_in_flight < self.settings.max_probes_in_flight
        )

    def _refusal(self) -> BreakerOpen:
        down_for = max(0.0, self._clock() - self._opened_at)
        return BreakerOpen(
            f"{self.where} is unavailable (no answer for {down_for:.0f}s; calls are "
            f"paused until a probe succeeds): {self._last_error}"
        )

    def success(self, permit: Permit) -> None:
        """The server answered (anything but a 5xx: a 4xx refusal is an answer too)."""
        recovered = False
        with self._lock:
            if self._settle(permit):
                if self._state is State.OPEN:
                    self.recoveries += 1
                    recovered = True
                self._state = State.CLOSED
                self._failures = 0
        if recovered and self._on_recovery is not None:
            self._on_recovery()  # outside the lock: it may call anything

    def failure(self, permit: Permit, error: str) -> None:
        """The server did not answer, or answered 5xx. `error` is shown while open."""
        with self._lock:
            if not self._settle(permit):
                return
            self._last_error = error
            if permit.probe or self._state is State.OPEN:
                return  # still open; or a call admitted before it opened
            self._failures += 1
            if self._failures >= self.settings.failure_threshold:
                now = self._clock()
                self._state = State.OPEN
                self._opened_at = now
                self._next_probe = now + self.settings.probe_interval

    def release(self, permit: Permit) -> None:
        """The call ended without telling anything about the server (a bug, a bad argument
        refused before any I/O): free a probe's slot, change nothing else."""
        with self._lock:
            self._settle(permit)

    def _settle(self, permit: Permit) -> bool:
        """Mark `permit` used (False if it already was); a probe frees its slot."""
        if permit.settled:
            return False
        permit.settled = True
        if permit.probe:
            self._probes_in_flight -= 1
        return True


class Breakers:
    """One breaker per server, shared by every gateway (API key) that talks to it."""

    def __init__(self, settings: BreakerSettings | None = None) -> None:
        self.settings = settings or BreakerSettings()
        self._breakers: dict[str, Breaker] = {}
        self._lock = threading.Lock()
        #: Called with the server's name each time one of its breakers closes again.
        self.listeners: list[Callable[[str], None]] = []

    def get(self, server: str, where: str | None = None) -> Breaker:
        """The server's breaker; `where` is how its messages name it (default: `server`)."""
        with self._lock:
            breaker = self._breakers.get(server)
            if breaker is None:
                breaker = self._breakers[server] = Breaker(
                    where or server, self.settings, on_recovery=lambda: self._recovered(server)
                )
            return breaker

    def _recovered(self, server: str) -> None:
        for listener in list(self.listeners):
            listener(server)

    def find(self, server: str) -> Breaker | None:
        with self._lock:
            return self._breakers.get(server)

    def clear(self) -> None:
        with self._lock:
            self._breakers.clear()
