"""Wake-up decisions and the control loop (`k8s.wakeups`), without kopf or a cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from vectorschema.api import CONFIRM_ANNOTATION, NamespaceStatus
from vectorschema.controller.backoff import SCHEDULES, Backoff, RetryKind, Schedule
from vectorschema.controller.results import Event, Result
from vectorschema.k8s.wakeups import Wakeups, control_loop, next_delay, sleep_until_woken

KEY = ("team-a", "tenant")


def body(generation: int, annotation: str | None = None, **meta: Any) -> dict[str, Any]:
    annotations = {CONFIRM_ANNOTATION: annotation} if annotation is not None else {}
    return {"metadata": {"generation": generation, "annotations": annotations, **meta}}


def test_spec_change_wakes_status_write_does_not() -> None:
    w = Wakeups()
    assert w.namespace_event(KEY, "ADDED", body(1)) is True
    # a status write or kopf's bookkeeping: same generation, same annotation
    assert w.namespace_event(KEY, "MODIFIED", body(1, resourceVersion="9")) is False
    assert w.namespace_event(KEY, "MODIFIED", body(2)) is True
    assert w.wakes[KEY, "spec"] == 2


def test_plugin_spec_change_wakes_its_status_write_does_not() -> None:
    w = Wakeups()

    def plugin(generation: int, uid: str = "u1", **status: Any) -> dict[str, Any]:
        return {"metadata": {"uid": uid, "generation": generation}, "status": status}

    assert w.plugin_event("text", "ADDED", plugin(1)) is True  # new to this operator
    assert w.plugin_event("text", "MODIFIED", plugin(1, valid=True)) is False  # its status
    assert w.plugin_event("text", "MODIFIED", plugin(2, valid=True)) is True  # its spec
    assert w.plugin_event("text", "DELETED", plugin(2)) is True
    assert w.plugin_event("text", "ADDED", plugin(1, "u2")) is True  # made again
    # made again while the operator missed the deletion: another object, same generation
    assert w.plugin_event("text", "MODIFIED", plugin(1, "u3")) is True


def test_approval_annotation_wakes() -> None:
    w = Wakeups()
    w.namespace_event(KEY, "ADDED", body(1))
    assert w.namespace_event(KEY, "MODIFIED", body(1, "0123456789abcdef")) is True
    assert w.namespace_event(KEY, "MODIFIED", body(1, "0123456789abcdef")) is False
    assert w.namespace_event(KEY, "MODIFIED", body(1)) is True  # consumed: removed


def test_wake_sets_the_registered_loop_only() -> None:
    w = Wakeups()
    waker = w.register(KEY)
    w.wake(("other", "x"), "plugin")  # no loop: counted, nothing to set
    assert not waker.is_set()
    w.wake(KEY, "secret")
    assert waker.is_set()
    assert w.wakes == {(("other", "x"), "plugin"): 1, (KEY, "secret"): 1}


def test_delete_prunes_everything_kept_about_the_resource() -> None:
    w = Wakeups()
    other = ("team-b", "tenant")
    for key in (KEY, other):
        w.namespace_event(key, "ADDED", body(1))
        w.wake(key, "plugin")
        w.passes[key] += 3
    w.namespace_event(KEY, "DELETED", body(1))
    assert KEY not in w.seen and KEY not in w.passes
    assert all(k != KEY for k, _ in w.wakes)
    assert w.passes[other] == 3 and w.wakes[other, "plugin"] == 1 and other in w.seen


def test_unregister_keeps_a_newer_loops_waker() -> None:
    w = Wakeups()
    old = w.register(KEY)
    w.unregister(KEY, old)
    new = w.register(KEY)
    w.unregister(KEY, old)  # a late finally of the old loop
    assert w.wakers[KEY] is new


def test_next_delay_backs_off_on_failures_and_resyncs_on_success() -> None:
    backoff = Backoff()
    failed = Result(status=NamespaceStatus(), retry=RetryKind.UNAVAILABLE)
    ok = Result(status=NamespaceStatus())
    ceilings = [SCHEDULES[RetryKind.UNAVAILABLE].ceiling(n) for n in range(1, 8)]
    for ceiling in ceilings:  # each failure in a row may wait longer
        assert 2.0 <= next_delay(KEY, failed, 60.0, backoff) <= ceiling
    assert backoff.attempts(KEY) == 7
    assert next_delay(KEY, ok, 60.0, backoff, jitter=lambda low, high: high) == 60.0 * 1.1
    assert backoff.attempts(KEY) == 0  # a success starts over


def test_next_delay_jitter_is_within_ten_percent() -> None:
    result = Result(status=NamespaceStatus())
    delays = [next_delay(KEY, result, 10.0, Backoff()) for _ in range(200)]
    assert all(9.0 <= d <= 11.0 for d in delays)


def test_failing_passes_never_loop_tightly(loop: asyncio.AbstractEventLoop) -> None:
    """A pass that fails every time (Qdrant down, a conflict, a bug) runs a handful of
    times in 1.5 s, not hundreds: the loop sleeps its backoff between passes."""
    for failing in (
        lambda: Result(NamespaceStatus(), retry=RetryKind.UNAVAILABLE),
        lambda: Result(NamespaceStatus(), retry=RetryKind.CONFLICT),
        None,  # raises
    ):
        assert runs_in(loop, failing, 1.5) <= 10  # conflicts: 0.2-0.5 s, then 0.2-1 s, ...


def runs_in(loop: asyncio.AbstractEventLoop, failing: Any, seconds: float) -> int:
    runs = 0
    stop = Stop()

    async def one_pass() -> Result | None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0)  # a real pass awaits its thread: a tight loop would spin here
        if failing is None:
            raise RuntimeError("bug")
        result: Result = failing()
        return result

    async def scenario() -> None:
        loop.call_later(seconds, lambda: setattr(stop, "stopped", True))
        await control_loop(
            KEY,
            Wakeups(),
            stopped=stop,
            deleting=lambda: False,
            run_pass=one_pass,
            post=lambda e: None,
            resync=lambda: 60.0,
        )

    loop.run_until_complete(scenario())
    assert runs >= 1
    return runs


def test_a_recovered_server_wakes_the_loops_that_wait_on_it(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """A loop that failed on an unavailable Qdrant sleeps its backoff (60 s here), but is
    woken within the recovery spread when that server's breaker closes."""
    w = Wakeups()
    runs: list[float] = []
    stop = Stop()

    async def one_pass() -> Result | None:
        runs.append(loop.time())
        if len(runs) == 2:
            stop.stopped = True
            return Result(NamespaceStatus())
        return Result(NamespaceStatus(), retry=RetryKind.UNAVAILABLE, unavailable="http://q")

    async def scenario() -> None:
        w.backoff.schedules[RetryKind.UNAVAILABLE] = Schedule(60.0, 60.0, 60.0)
        loop.call_later(0.3, lambda: w.recovered("http://q", 0.5))
        loop.call_later(0.3, lambda: w.recovered("http://other", 0.5))  # not ours
        await control_loop(
            KEY,
            w,
            stopped=stop,
            deleting=lambda: False,
            run_pass=one_pass,
            post=lambda e: None,
            resync=lambda: 60.0,
        )

    loop.run_until_complete(asyncio.wait_for(scenario(), 10))
    assert len(runs) == 2 and 0.3 <= runs[1] - runs[0] < 1.5
    assert w.wakes[KEY, "recovery"] == 1
    assert w.waiting == {} and w.unavailable_on == {}


def test_waiting_on_a_server_is_forgotten_on_success_and_deletion() -> None:
    w = Wakeups()
    w.note_unavailable(KEY, "http://q")
    w.note_unavailable(("b", "c"), "http://q")
    assert w.waiting == {"http://q": {KEY, ("b", "c")}}
    w.note_unavailable(KEY, None)  # its next pass went through
    w.forget(("b", "c"))
    assert w.waiting == {} and w.unavailable_on == {}


class Stop:
    def __init__(self) -> None:
        self.stopped = False

    def __bool__(self) -> bool:
        return self.stopped


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


def test_sleep_returns_when_woken(loop: asyncio.AbstractEventLoop) -> None:
    async def scenario() -> float:
        waker = asyncio.Event()
        loop.call_later(0.05, waker.set)
        started = loop.time()
        await sleep_until_woken(waker, Stop(), 30.0)
        return loop.time() - started

    assert loop.run_until_complete(scenario()) < 5.0


def test_control_loop_counts_passes_posts_events_and_forgets_when_gone(
    loop: asyncio.AbstractEventLoop,
) -> None:
    w = Wakeups()
    posted: list[Event] = []
    results: list[Result | None] = [
        Result(NamespaceStatus(), [Event("Normal", "Reconfigured", "done")]),
        Result(NamespaceStatus()),
        None,  # gone
    ]

    async def one_pass() -> Result | None:
        return results.pop(0)

    async def scenario() -> None:
        w.namespace_event(KEY, "ADDED", body(1))
        await control_loop(
            KEY,
            w,
            stopped=Stop(),
            deleting=lambda: False,
            run_pass=one_pass,
            post=posted.append,
            resync=lambda: 0.0,
        )

    loop.run_until_complete(asyncio.wait_for(scenario(), 10))
    assert posted == [Event("Normal", "Reconfigured", "done")]
    assert results == []
    assert KEY not in w.wakers and KEY not in w.passes and KEY not in w.seen


def test_control_loop_backs_off_after_an_unexpected_error_and_is_woken(
    loop: asyncio.AbstractEventLoop,
) -> None:
    w = Wakeups()
    stop = Stop()
    calls: list[str] = []

    async def one_pass() -> Result | None:
        calls.append("pass")
        if len(calls) == 1:
            raise RuntimeError("API hiccup")
        stop.stopped = True
        return Result(NamespaceStatus())

    async def scenario() -> None:
        task = asyncio.ensure_future(
            control_loop(
                KEY,
                w,
                stopped=stop,
                deleting=lambda: False,
                run_pass=one_pass,
                post=lambda e: None,
                resync=lambda: 60.0,
            )
        )
        while len(calls) < 1:
            await asyncio.sleep(0.01)
        w.wake(KEY, "plugin")  # cuts the 5 s back-off short
        await task

    loop.run_until_complete(asyncio.wait_for(scenario(), 4))
    assert calls == ["pass", "pass"]
    assert w.passes[KEY] == 1
    assert KEY not in w.wakers  # unregistered; still known (stopped, not deleted)


def test_control_loop_stops_at_once_when_the_resource_is_being_deleted(
    loop: asyncio.AbstractEventLoop,
) -> None:
    w = Wakeups()

    async def one_pass() -> Result | None:
        raise AssertionError("no pass on a resource being deleted")

    loop.run_until_complete(
        control_loop(
            KEY,
            w,
            stopped=Stop(),
            deleting=lambda: True,
            run_pass=one_pass,
            post=lambda e: None,
            resync=lambda: 60.0,
        )
    )
    assert KEY not in w.wakers


class AwaitableStop:
    """Like kopf's `DaemonStopped`: true once set, and awaitable through `wait()`."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    async def wait(self) -> None:
        await self.event.wait()


def test_sleep_awaits_an_awaitable_stop_flag_without_polling() -> None:
    async def scenario() -> tuple[float, float]:
        waker, stop = asyncio.Event(), AwaitableStop()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await sleep_until_woken(waker, stop, 0.05)  # the delay passes
        slept = loop.time() - t0
        loop.call_later(0.05, stop.event.set)
        t0 = loop.time()
        await sleep_until_woken(waker, stop, 30.0)  # stopped long before the delay
        stopped = loop.time() - t0
        loop.call_later(0.05, waker.set)
        await asyncio.wait_for(sleep_until_woken(waker, AwaitableStop(), 30.0), 5)
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return slept, stopped

    slept, stopped = asyncio.run(scenario())
    assert 0.04 <= slept < 1.0
    assert stopped < 1.0


def test_a_sleeping_loop_holds_no_task_and_stops_when_kopf_stops_it() -> None:
    """With kopf's awaitable stop flag, a loop sleeping on its resync interval holds one
    task of its own (the one that waits for the stop), not new tasks per sleep; stopping
    it ends the loop at once, and nothing of it is left running."""

    async def scenario() -> tuple[int, float]:
        w, stop = Wakeups(), AwaitableStop()
        passes: list[int] = []

        async def one_pass() -> Result | None:
            passes.append(1)
            return Result(NamespaceStatus())

        others = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        loop_task = asyncio.ensure_future(
            control_loop(
                KEY,
                w,
                stopped=stop,
                deleting=lambda: False,
                run_pass=one_pass,
                post=lambda e: None,
                resync=lambda: 60.0,
            )
        )
        for _ in range(3):  # woken twice after the first pass: three passes, then asleep
            while len(passes) < _ + 1:
                await asyncio.sleep(0.01)
            if _ < 2:
                w.wake(KEY, "plugin")
        await asyncio.sleep(0.05)
        held = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} - others
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        stop.event.set()
        await asyncio.wait_for(loop_task, 5)
        stopped_in = loop.time() - t0
        await asyncio.sleep(0)
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert len(passes) == 3
        return len(held), stopped_in

    held, stopped_in = asyncio.run(scenario())
    assert held == 2  # the loop itself and its stop watcher
    assert stopped_in < 1.0
