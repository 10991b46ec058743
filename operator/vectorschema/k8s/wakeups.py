"""Wake-ups of the per-Namespace control loops, and the loop itself.

The operator is level-triggered: each Namespace resource has one control loop that
reconciles it whenever something it depends on changes, and on a jittered interval to
catch drift in Qdrant. `Wakeups` is the per-operator state (kept in kopf's `memo`, one per
operator, not in module globals): the loops' wake-up events, what each Namespace last
looked like, and counters for observability, all pruned when the resource is deleted.
Everything here is plain asyncio, unit-tested without kopf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from vectorschema.api import (
    ABANDON_ANNOTATION,
    API_VERSION,
    CONFIRM_ANNOTATION,
    NAMESPACE_KIND,
    RETRY_BACKFILL_ANNOTATION,
)
from vectorschema.controller.backoff import Backoff, RetryKind
from vectorschema.controller.results import Event, Result
from vectorschema.k8s.retries import KubeUnavailable

log = logging.getLogger("vectorschema")

Key = tuple[str, str]


@dataclass
class Wakeups:
    """Per-operator wake-up state: one in kopf's `memo` (see `handlers.configure`)."""

    wakers: dict[Key, asyncio.Event] = field(default_factory=dict)
    #: What each Namespace's last event showed: (generation, approval and abandon
    #: annotations, backfill retry annotation).
    seen: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    #: Reconcile passes per Namespace, and wake-ups by cause (observability).
    passes: Counter[Key] = field(default_factory=Counter)
    wakes: Counter[tuple[Key, str]] = field(default_factory=Counter)
    #: Consecutive failures per Namespace, and the delay before its next pass.
    backoff: Backoff = field(default_factory=Backoff)
    #: The Qdrant (location) each Namespace last found unavailable, and the reverse: who
    #: waits on each server (woken when its breaker closes, see `recovered`).
    unavailable_on: dict[Key, str] = field(default_factory=dict)
    waiting: dict[str, set[Key]] = field(default_factory=dict)
    #: What each Plugin's last event showed: (uid, generation).
    plugins_seen: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    #: Namespaces with backfill Jobs waiting for a slot (woken when a Job ends).
    backfill_waiting: set[Key] = field(default_factory=set)

    def wake(self, key: Key, why: str) -> None:
        self.wakes[key, why] += 1
        waker = self.wakers.get(key)
        if waker is not None:
            waker.set()

    def namespace_event(self, key: Key, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """A Namespace event: wake its loop when the spec (generation), the approval
        annotation, the abandon annotation or the backfill retry annotation changed, not on
        status writes or kopf's bookkeeping. True if woken."""
        meta = body.get("metadata", {})
        annotations = meta.get("annotations") or {}
        seen = (
            meta.get("generation"),
            annotations.get(CONFIRM_ANNOTATION),
            annotations.get(ABANDON_ANNOTATION),
            annotations.get(RETRY_BACKFILL_ANNOTATION),
        )
        woken = self.seen.get(key) != seen
        if woken:
            self.seen[key] = seen
            self.wake(key, "spec")
        if event_type == "DELETED":
            self.forget(key)
        return woken

    def plugin_event(self, name: str, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """A Plugin event: True (wake the Namespaces that list it) when it is new to this
        operator, its spec changed (generation) or it went; not for a status write, which
        the operator makes itself for every Plugin it sees (each would wake every
        Namespace that lists it for a pass with nothing to do)."""
        if event_type == "DELETED":
            self.plugins_seen.pop(name, None)
            return True
        meta = body.get("metadata", {})
        seen = (meta.get("uid"), meta.get("generation"))
        if self.plugins_seen.get(name) == seen:
            return False
        self.plugins_seen[name] = seen
        return True

    def forget(self, key: Key) -> None:
        """Drop everything kept about a deleted resource."""
        self.seen.pop(key, None)
        self.passes.pop(key, None)
        self.backoff.forget(key)
        self.note_unavailable(key, None)
        self.backfill_waiting.discard(key)
        for k in [k for k in self.wakes if k[0] == key]:
            del self.wakes[k]

    def note_unavailable(self, key: Key, location: str | None) -> None:
        """Remember which Qdrant `key`'s last pass found unavailable (None: none)."""
        old = self.unavailable_on.pop(key, None)
        if old is not None:
            keys = self.waiting.get(old)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.waiting[old]
        if location is not None:
            self.unavailable_on[key] = location
            self.waiting.setdefault(location, set()).add(key)

    def recovered(
        self,
        location: str,
        spread: float,
        jitter: Callable[[float, float], float] = random.uniform,
    ) -> int:
        """The Qdrant at `location` answers again (its breaker closed): wake every loop
        waiting on it, each at a random point of the next `spread` seconds (so they do not
        all arrive at once). Runs on the event loop. Returns how many were woken."""
        keys = self.waiting.pop(location, set())
        loop = asyncio.get_running_loop()
        for key in keys:
            self.unavailable_on.pop(key, None)
            loop.call_later(jitter(0.0, spread), self.wake, key, "recovery")
        return len(keys)

    def job_event(self, namespace: str, body: Mapping[str, Any], ended: bool) -> None:
        """A backfill Job changed: wake its owner; when one ended (a slot is free), wake
        every Namespace whose Jobs wait for a slot."""
        meta = body.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            if ref.get("apiVersion") == API_VERSION and ref.get("kind") == NAMESPACE_KIND:
                self.wake((namespace, ref["name"]), "job")
        if ended:
            for key in sorted(self.backfill_waiting):
                self.wake(key, "slot")

    def register(self, key: Key) -> asyncio.Event:
        return self.wakers.setdefault(key, asyncio.Event())

    def unregister(self, key: Key, waker: asyncio.Event) -> None:
        if self.wakers.get(key) is waker:
            del self.wakers[key]


class Stopped(Protocol):
    """kopf's `DaemonStopped`: true once the loop must stop."""

    def __bool__(self) -> bool: ...


def next_delay(
    key: Key,
    result: Result,
    resync: float,
    backoff: Backoff,
    jitter: Callable[[float, float], float] = random.uniform,
) -> float:
    """When to run again: after a failure, the backoff of its kind (growing with each
    failure in a row); else the resync interval +-10%."""
    if result.retry is None:
        backoff.succeeded(key)
        return resync * jitter(0.9, 1.1)
    return backoff.failed(key, result.retry)


async def control_loop(
    key: Key,
    wakeups: Wakeups,
    *,
    stopped: Stopped,
    deleting: Callable[[], bool],
    run_pass: Callable[[], Awaitable[Result | None]],
    post: Callable[[Event], None],
    resync: Callable[[], float],
) -> None:
    """Reconcile now, on every wake-up, and on the resync interval, until stopped or the
    resource goes away. One loop per resource: its passes never overlap.

    A failed pass waits its backoff (`controller.backoff`); one that found its Qdrant
    unavailable is also woken when that server answers again (`Wakeups.recovered`)."""
    waker = wakeups.register(key)
    sleeper = Sleeper(waker, stopped)
    gone = False
    try:
        while not stopped:
            waker.clear()
            if deleting():
                gone = True
                return
            delay = await _pass_and_delay(key, wakeups, run_pass, post, resync)
            if delay is None:  # gone or being deleted
                gone = True
                return
            await sleeper.sleep(delay)
    finally:
        sleeper.close()
        wakeups.unregister(key, waker)
        if gone:
            wakeups.forget(key)


async def _pass_and_delay(
    key: Key,
    wakeups: Wakeups,
    run_pass: Callable[[], Awaitable[Result | None]],
    post: Callable[[Event], None],
    resync: Callable[[], float],
) -> float | None:
    """One pass, its Events posted; the delay before the next (None: the resource is
    gone). The pass's result is not kept while the loop sleeps: a status is held per
    Namespace where it is needed (the metrics, the observations), not once more here."""
    try:
        result = await run_pass()
    except KubeUnavailable as exc:
        log.warning("reconcile of %s/%s failed: %s", *key, exc)
        return wakeups.backoff.failed(key, RetryKind.UNAVAILABLE)
    except Exception:
        log.exception("reconcile of %s/%s failed", *key)
        return wakeups.backoff.failed(key, RetryKind.UNEXPECTED)
    if result is None:
        return None
    wakeups.passes[key] += 1
    for event in result.events:
        post(event)
    delay = next_delay(key, result, resync(), wakeups.backoff)
    wakeups.note_unavailable(key, result.unavailable)
    return delay


class Sleeper:
    """The sleeps of one control loop: until the delay passes, the loop is woken, or
    kopf stops it.

    kopf's `DaemonStopped` can be awaited (`stopped.wait()`): one task per loop awaits it
    and wakes the loop, and each sleep is a single wait on the waker with a timeout, so
    a sleeping loop holds no task of its own (10,000 sleeping loops held two tasks and an
    `asyncio.wait` each, created anew on every pass). Other stop flags are checked every
    second (a thousand loops polling every second cost a few percent of a core)."""

    def __init__(self, waker: asyncio.Event, stopped: Stopped) -> None:
        self._waker = waker
        self._stopped = stopped
        wait_stopped: Callable[[], Awaitable[Any]] | None = getattr(stopped, "wait", None)
        self._watch = (
            None if wait_stopped is None else asyncio.ensure_future(self._wake(wait_stopped))
        )

    async def _wake(self, wait_stopped: Callable[[], Awaitable[Any]]) -> None:
        await wait_stopped()
        self._waker.set()

    async def sleep(self, delay: float) -> None:
        """Sleep `delay` seconds, less if woken or stopped."""
        if self._stopped or self._waker.is_set():
            return
        if self._watch is None:
            deadline = time.monotonic() + delay
            while not self._stopped and not self._waker.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._waker.wait(), timeout=min(remaining, 1.0))
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(delay, 0.0)):
                await self._waker.wait()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()


async def sleep_until_woken(waker: asyncio.Event, stopped: Stopped, delay: float) -> None:
    """One sleep of a `Sleeper` (see there)."""
    sleeper = Sleeper(waker, stopped)
    try:
        await sleeper.sleep(delay)
    finally:
        sleeper.close()
