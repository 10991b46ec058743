"""The per-server circuit breaker: a server that is down gets a few probes, not load."""

from __future__ import annotations

import threading

import pytest

from vectorschema.qdrant.breaker import Breaker, BreakerOpen, Breakers, BreakerSettings, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def down(breaker: Breaker, n: int) -> None:
    for _ in range(n):
        breaker.failure(breaker.admit(), "connection refused")


def test_closed_until_the_threshold_of_consecutive_failures() -> None:
    breaker = Breaker("Qdrant at http://q", BreakerSettings(failure_threshold=3))
    down(breaker, 2)
    breaker.success(breaker.admit())  # an answer resets the streak
    down(breaker, 2)
    assert breaker.state is State.CLOSED
    down(breaker, 1)
    assert breaker.state is State.OPEN


def test_open_refuses_without_io_and_says_why() -> None:
    clock = Clock()
    breaker = Breaker("Qdrant at http://q", clock=clock)
    down(breaker, 3)
    clock.now += 42
    breaker.failure(breaker.admit(), "timed out")  # the probe fails
    with pytest.raises(BreakerOpen) as info:
        breaker.admit()
    message = str(info.value)
    assert message.startswith("Qdrant at http://q is unavailable")
    assert "42s" in message and message.endswith("timed out")


@pytest.mark.parametrize("namespaces", [10, 200, 10_000])
def test_probes_per_second_do_not_grow_with_the_number_of_callers(namespaces: int) -> None:
    """Every caller retries every 0.1 s (far tighter than any backoff) for 60 s: the
    server sees at most one probe per `probe_interval`, whatever the number of callers."""
    clock = Clock()
    breaker = Breaker("q", BreakerSettings(probe_interval=0.5), clock=clock)
    down(breaker, 3)
    reached = 0
    calls = 0
    for _tick in range(600):
        clock.now += 0.1
        for _ in range(min(namespaces, 50)):  # enough callers per tick to saturate
            calls += 1
            try:
                permit = breaker.admit()
            except BreakerOpen:
                continue
            reached += 1
            breaker.failure(permit, "connection refused")
    assert reached <= 60 / 0.5 + 1
    assert breaker.refused == calls - reached


def test_one_probe_in_flight_at_a_time() -> None:
    clock = Clock()
    breaker = Breaker("q", BreakerSettings(probe_interval=0.1, max_probes_in_flight=1), clock=clock)
    down(breaker, 3)
    clock.now += 1
    hung = breaker.admit()  # a probe into a blackhole: no answer yet
    assert hung.probe
    clock.now += 5
    with pytest.raises(BreakerOpen):
        breaker.admit()  # its interval passed, but the first probe still hangs
    breaker.failure(hung, "timed out")
    assert breaker.admit().probe


def test_a_successful_probe_closes_it() -> None:
    clock = Clock()
    breaker = Breaker("q", clock=clock)
    down(breaker, 3)
    clock.now += 1
    probe = breaker.admit()
    breaker.success(probe)
    assert breaker.state is State.CLOSED
    for _ in range(100):
        breaker.success(breaker.admit())  # no rate limit while closed


def test_release_frees_a_probe_slot_without_closing() -> None:
    clock = Clock()
    breaker = Breaker("q", clock=clock)
    down(breaker, 3)
    clock.now += 1
    breaker.release(breaker.admit())
    assert breaker.state is State.OPEN
    clock.now += 1
    assert breaker.admit().probe


def test_calls_admitted_before_it_opened_do_not_reset_the_clock() -> None:
    clock = Clock()
    breaker = Breaker("q", clock=clock)
    early = [breaker.admit() for _ in range(10)]  # all in flight when the server dies
    for permit in early[:3]:
        breaker.failure(permit, "reset")
    assert breaker.state is State.OPEN
    for permit in early[3:]:
        breaker.failure(permit, "reset")
        breaker.failure(permit, "reset")  # settling twice is harmless
    clock.now += 1
    assert breaker.admit().probe


def test_thread_safety_under_contention() -> None:
    breaker = Breaker("q", BreakerSettings(probe_interval=10.0))
    down(breaker, 3)
    admitted: list[int] = []

    def hammer() -> None:
        for _ in range(2000):
            try:
                breaker.admit()
            except BreakerOpen:
                continue
            admitted.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) <= 1  # one probe per 10 s, however many threads race for it


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        BreakerSettings(failure_threshold=0)
    with pytest.raises(ValueError):
        BreakerSettings(probe_interval=0)


def test_recoveries_count_each_close_after_open() -> None:
    clock = Clock()
    breaker = Breaker("q", clock=clock)
    breaker.success(breaker.admit())
    assert breaker.recoveries == 0  # closing a closed breaker is no recovery
    down(breaker, 3)
    clock.now += 1
    breaker.success(breaker.admit())
    assert breaker.recoveries == 1


def test_one_breaker_per_server() -> None:
    breakers = Breakers(BreakerSettings(failure_threshold=1))
    assert breakers.get("http://a") is breakers.get("http://a")
    assert breakers.get("http://a") is not breakers.get("http://b")
    assert breakers.get("http://a").settings.failure_threshold == 1
    assert breakers.find("http://c") is None


def test_check_refuses_early_without_using_a_probe() -> None:
    clock = Clock()
    breaker = Breaker("q", clock=clock)
    breaker.check()  # closed: fine
    down(breaker, 3)
    with pytest.raises(BreakerOpen):
        breaker.check()
    clock.now += 1
    breaker.check()  # a probe is due: this caller may go on and ask for it
    breaker.check()  # ...and checking again did not use it up
    assert breaker.admit().probe


def test_listeners_hear_each_recovery_of_a_server() -> None:
    breakers = Breakers(BreakerSettings(failure_threshold=1, probe_interval=0.01))
    heard: list[str] = []
    breakers.listeners.append(heard.append)
    breaker = breakers.get("http://a", "Qdrant at http://a")
    breaker.success(breaker.admit())
    assert heard == []  # closed all along: nothing to tell
    breaker.failure(breaker.admit(), "down")
    import time

    time.sleep(0.02)
    breaker.success(breaker.admit())
    assert heard == ["http://a"]
