"""Per-server call limits: a bound on calls in flight, and one ordered lane per collection."""

from __future__ import annotations

import threading
import time

import pytest

from vectorschema.qdrant.limits import CallLimiter, LimitTimeout


def run_all(threads: list[threading.Thread], timeout: float = 10.0) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive()


def test_calls_run_concurrently_up_to_the_bound() -> None:
    limiter = CallLimiter(max_in_flight=4)
    gate = threading.Barrier(4, timeout=5)

    def call() -> None:
        with limiter.slot():
            gate.wait()  # only passes if four calls are in flight together
            time.sleep(0.05)

    run_all([threading.Thread(target=call) for _ in range(12)])
    assert limiter.peak_in_flight == 4
    assert limiter.in_flight == 0


def test_a_full_server_makes_callers_wait_a_bounded_time() -> None:
    limiter = CallLimiter(max_in_flight=1, wait_timeout=0.2)
    release = threading.Event()

    def hold() -> None:
        with limiter.slot():
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    while limiter.in_flight == 0:
        time.sleep(0.01)
    started = time.monotonic()
    with (
        pytest.raises(LimitTimeout, match="1 calls already in flight and none answered"),
        limiter.slot(),
    ):
        pass
    assert 0.15 < time.monotonic() - started < 2
    release.set()
    holder.join()


def test_a_busy_server_that_answers_is_queued_for_not_refused() -> None:
    """Eight calls, one slot, each answered after 0.2 s: the last waits 1.4 s, longer
    than `wait_timeout`, and still gets its turn, since the server kept answering."""
    limiter = CallLimiter(max_in_flight=1, wait_timeout=1.0)
    refused: list[LimitTimeout] = []
    done: list[int] = []

    def call(i: int) -> None:
        try:
            with limiter.slot():
                time.sleep(0.2)  # the server's answer takes this long
                limiter.answered()
                done.append(i)
        except LimitTimeout as exc:
            refused.append(exc)

    run_all([threading.Thread(target=call, args=(i,)) for i in range(8)])
    assert refused == []
    assert sorted(done) == list(range(8))


def test_one_collection_runs_in_arrival_order_others_in_parallel() -> None:
    limiter = CallLimiter(max_in_flight=16)
    order: list[int] = []
    first_in = threading.Event()
    release_first = threading.Event()
    other_done = threading.Event()

    def first() -> None:
        with limiter.lane("c"):
            first_in.set()
            release_first.wait(5)
            order.append(0)

    def queued(i: int) -> None:
        with limiter.lane("c"):
            order.append(i)

    def other() -> None:
        with limiter.lane("d"):
            other_done.set()

    t0 = threading.Thread(target=first)
    t0.start()
    assert first_in.wait(5)
    waiting = []
    for i in range(1, 9):  # queue them one after the other, in a known order
        t = threading.Thread(target=queued, args=(i,))
        t.start()
        waiting.append(t)
        time.sleep(0.02)
    t_other = threading.Thread(target=other)
    t_other.start()
    assert other_done.wait(5)  # another collection is not held up by "c"
    release_first.set()
    for t in [t0, *waiting, t_other]:
        t.join(5)
    assert order == list(range(9))


def test_a_lane_is_reentrant_for_its_holder() -> None:
    limiter = CallLimiter()
    with limiter.lane("c"), limiter.lane("c"), limiter.slot():
        pass
    with limiter.lane("c"):  # and free again afterwards
        pass
    assert limiter._lanes == {}


def test_a_caller_that_gives_up_does_not_block_the_ones_behind() -> None:
    limiter = CallLimiter(wait_timeout=0.2)
    got: list[str] = []
    release = threading.Event()

    def holder() -> None:
        with limiter.lane("c"):
            release.wait(5)

    def impatient() -> None:
        try:
            with limiter.lane("c"):
                got.append("impatient")
        except LimitTimeout:
            got.append("gave up")

    def patient() -> None:
        limiter.wait_timeout = 5
        with limiter.lane("c"):
            got.append("patient")

    t1 = threading.Thread(target=holder)
    t1.start()
    time.sleep(0.05)
    t2 = threading.Thread(target=impatient)
    t2.start()
    t2.join(5)
    t3 = threading.Thread(target=patient)
    t3.start()
    time.sleep(0.05)
    release.set()
    t1.join(5)
    t3.join(5)
    assert got == ["gave up", "patient"]
    assert limiter._lanes == {}
