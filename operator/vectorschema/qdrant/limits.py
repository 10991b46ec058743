"""How many calls one remote Qdrant server gets at once, and in which order.

A remote server answers many requests concurrently, so its gateway no longer serialises
them behind one lock. Two rules remain:

- **A bound per server** (`max_in_flight`, default 16, `VECTORSCHEMA_QDRANT_MAX_IN_FLIGHT`):
  a slow server holds at most that many worker threads in calls, and a caller waits for a
  slot while the server makes progress: it is told the server is saturated
  (`LimitTimeout`) only after `wait_timeout` in which no call of that server was answered
  (`answered()`), instead of queueing without end behind a server that does not answer.
  A busy server that answers (a burst of a thousand new Namespaces) is queued for, not
  failed: failing would cost each pass a backoff and a repeat of its reads. Each server
  has its own bound, so a hung server cannot take the slots of another.
- **One collection, one lane**: calls for the same collection run one at a time, in the
  order they asked (a ticket queue, first come first served), so a multi-call step (create a
  vector, then tune it) is never interleaved with another pass's step on that collection.
  A lane is re-entrant for the thread that holds it: a step holds its lane across its
  calls, and each call inside takes a server slot of its own.

- **A share per tenant** (`per_tenant`, default a quarter of `max_in_flight`,
  `VECTORSCHEMA_QDRANT_MAX_IN_FLIGHT_PER_TENANT`): a call made on behalf of a tenant (the
  Kubernetes namespace in `TENANT`, set by the kopf layer for each control loop and
  release) first takes one of that tenant's slots, then one of the server's. A tenant that
  floods the server waits on its own share, and the others' calls find server slots free.
  A tenant's share exists only while one of its calls holds or waits for it.

The local store is not concurrent at all; its gateway keeps one lock and does not use this.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "TENANT", "CallLimiter", "LimitTimeout"]

DEFAULT_MAX_IN_FLIGHT = 16

#: The tenant (Kubernetes namespace) the calls of this context are made for; None: the
#: operator's own (no share applies). Context variables follow worker threads that run
#: with a copied context (`asyncio.to_thread`, the operator's executor).
TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "vectorschema_tenant", default=None
)


def default_share(max_in_flight: int) -> int:
    """A tenant's share when none is set: a quarter of the server's slots, at least one."""
    return max(1, max_in_flight // 4)


class LimitTimeout(Exception):
    """No slot (or the collection's lane) came free in time: the server is saturated."""


@dataclass
class _Lane:
    next_ticket: int = 0
    serving: int = 0
    owner: int | None = None  # thread id holding the lane
    depth: int = 0
    users: int = 0  # tickets taken and not yet done: the lane is dropped at zero
    abandoned: set[int] = field(default_factory=set)  # tickets that gave up waiting
    cond: threading.Condition = field(default_factory=threading.Condition)


class CallLimiter:
    """The in-flight bound and the per-collection lanes of one server."""

    def __init__(
        self,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        wait_timeout: float = 10.0,
        per_tenant: int | None = None,
    ):
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self.wait_timeout = wait_timeout
        self.per_tenant = min(max_in_flight, per_tenant or default_share(max_in_flight))
        self._slots = threading.BoundedSemaphore(max_in_flight)
        #: tenant -> (its semaphore, calls holding or waiting for it)
        self._tenants: dict[str, tuple[threading.BoundedSemaphore, int]] = {}
        self._lanes: dict[str, _Lane] = {}
        self._lanes_lock = threading.Lock()
        self._in_flight = 0
        self._count_lock = threading.Lock()
        #: Calls answered so far: a waiter's deadline moves while this moves.
        self._answered = 0
        #: The most calls seen in flight at once (observability, tests).
        self.peak_in_flight = 0

    @property
    def in_flight(self) -> int:
        with self._count_lock:
            return self._in_flight

    @property
    def tenants(self) -> int:
        """Tenants with a call holding or waiting for a share (observability, tests)."""
        with self._count_lock:
            return len(self._tenants)

    def answered(self) -> None:
        """A call of this server got an answer (the server makes progress)."""
        with self._count_lock:
            self._answered += 1

    def _acquire(self, sem: threading.BoundedSemaphore) -> bool:
        """Take `sem`, waiting while the server answers calls; False after `wait_timeout`
        in which none was answered."""
        while True:
            with self._count_lock:
                seen = self._answered
            if sem.acquire(timeout=self.wait_timeout):
                return True
            with self._count_lock:
                if self._answered == seen:
                    return False

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the tenant's `per_tenant` slots (when the call is made for a
        tenant), then one of the server's `max_in_flight`, for one call."""
        tenant = TENANT.get()
        if tenant is None:
            with self._server_slot():
                yield
            return
        share = self._share(tenant)
        try:
            if not self._acquire(share):
                raise LimitTimeout(
                    f"{self.per_tenant} calls for tenant {tenant!r} already in flight and "
                    f"none answered for {self.wait_timeout:.0f}s"
                )
            try:
                with self._server_slot():
                    yield
            finally:
                share.release()
        finally:
            self._unshare(tenant)

    def _share(self, tenant: str) -> threading.BoundedSemaphore:
        with self._count_lock:
            sem, users = self._tenants.get(tenant, (None, 0))
            if sem is None:
                sem = threading.BoundedSemaphore(self.per_tenant)
            self._tenants[tenant] = (sem, users + 1)
            return sem

    def _unshare(self, tenant: str) -> None:
        with self._count_lock:
            sem, users = self._tenants[tenant]
            if users <= 1:
                del self._tenants[tenant]
            else:
                self._tenants[tenant] = (sem, users - 1)

    @contextlib.contextmanager
    def _server_slot(self) -> Iterator[None]:
        if not self._acquire(self._slots):
            raise LimitTimeout(
                f"{self.max_in_flight} calls already in flight and none answered for "
                f"{self.wait_timeout:.0f}s"
            )
        with self._count_lock:
            self._in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        try:
            yield
        finally:
            with self._count_lock:
                self._in_flight -= 1
            self._slots.release()

    @contextlib.contextmanager
    def lane(self, collection: str) -> Iterator[None]:
        """Run the body when every earlier caller for `collection` is done (FIFO)."""
        me = threading.get_ident()
        with self._lanes_lock:
            lane = self._lanes.setdefault(collection, _Lane())
            if lane.owner == me:  # re-entered by the step that holds it
                lane.depth += 1
                reentered = True
            else:
                reentered = False
                ticket = lane.next_ticket
                lane.next_ticket += 1
                lane.users += 1
        if reentered:
            try:
                yield
            finally:
                lane.depth -= 1
            return
        deadline = time.monotonic() + self.wait_timeout
        with lane.cond:
            while lane.serving != ticket:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not lane.cond.wait(remaining):
                    if lane.serving == ticket:
                        break
                    # Give the turn up in order: whoever waits behind must not wait for us.
                    self._abandon(collection, lane, ticket)
                    raise LimitTimeout(
                        f"calls for collection {collection!r} queued for {self.wait_timeout:.0f}s"
                    )
            lane.owner, lane.depth = me, 1
        try:
            yield
        finally:
            with lane.cond:
                lane.owner, lane.depth = None, 0
                self._advance(lane)
                lane.cond.notify_all()
            self._done(collection, lane)

    def _abandon(self, collection: str, lane: _Lane, ticket: int) -> None:
        """A ticket that timed out is skipped when its turn comes."""
        lane.abandoned.add(ticket)
        self._done(collection, lane)

    @staticmethod
    def _advance(lane: _Lane) -> None:
        lane.serving += 1
        while lane.serving in lane.abandoned:
            lane.abandoned.discard(lane.serving)
            lane.serving += 1

    def _done(self, collection: str, lane: _Lane) -> None:
        with self._lanes_lock:
            lane.users -= 1
            if lane.users == 0 and self._lanes.get(collection) is lane:
                del self._lanes[collection]
