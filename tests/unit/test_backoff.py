"""Retry delays: capped exponential backoff with full jitter, and no tight loop."""

from __future__ import annotations

import random
import statistics

import pytest

from vectorschema.controller.backoff import SCHEDULES, Backoff, RetryKind, Schedule


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(1234)  # tenacity draws with `random`: the same numbers every run


@pytest.mark.parametrize("failure", list(RetryKind))
def test_every_delay_is_within_floor_and_the_growing_ceiling(failure: RetryKind) -> None:
    schedule = SCHEDULES[failure]
    for attempt in range(1, 40):
        ceiling = min(schedule.cap, max(schedule.floor, schedule.base * 2 ** (attempt - 1)))
        assert schedule.ceiling(attempt) == ceiling
        for _ in range(50):
            assert schedule.floor <= schedule.delay(attempt) <= ceiling


@pytest.mark.parametrize("failure", list(RetryKind))
def test_no_schedule_allows_a_tight_loop(failure: RetryKind) -> None:
    # the quickest retry of anything is 0.2 s (a conflict), the others wait seconds
    assert SCHEDULES[failure].floor >= 0.2
    if failure is not RetryKind.CONFLICT and failure is not RetryKind.MOVED:
        assert SCHEDULES[failure].floor >= 2.0


def test_the_documented_schedule() -> None:
    """The documented schedule, row for row (also in the backoff docstring; the docs page is
    generated from SCHEDULES): a change here is a change of behaviour users rely on."""
    assert {
        RetryKind.UNAVAILABLE: Schedule(2.0, 2.0, 300.0),
        RetryKind.REJECTED: Schedule(30.0, 30.0, 900.0),
        RetryKind.UNEXPECTED: Schedule(2.0, 2.0, 300.0),
        RetryKind.CONFLICT: Schedule(0.2, 0.5, 30.0),
        RetryKind.MOVED: Schedule(0.5, 1.0, 30.0),
    } == SCHEDULES


def test_delays_grow_until_the_cap_and_are_jittered() -> None:
    schedule = SCHEDULES[RetryKind.UNAVAILABLE]
    means = [statistics.mean(schedule.delay(n) for _ in range(400)) for n in range(1, 12)]
    # full jitter: the mean is about half-way between floor and ceiling, growing...
    for n, mean in enumerate(means, start=1):
        expected = (schedule.floor + schedule.ceiling(n)) / 2
        assert mean == pytest.approx(expected, rel=0.15)
    assert means[-1] > 100
    # ...and draws at the cap are spread over the whole window, not bunched at one value
    draws = [schedule.delay(20) for _ in range(400)]
    assert max(draws) <= 300 and min(draws) >= 2
    assert statistics.pstdev(draws) > 60
    assert len({round(d, 3) for d in draws}) > 390


def test_a_thousand_resources_on_a_dead_server_stay_bounded() -> None:
    """Simulated time: 1,000 resources fail QdrantUnavailable for 30 minutes.

    The old fixed 10 s retry made 180,000 attempts here (100 a second); the backoff makes
    a few percent of that, and the rate in the last five minutes is about 1000/150 s.
    """
    backoff = Backoff()
    horizon = 1800.0
    attempts = 0
    late = 0
    for key in range(1000):
        t = 0.0
        while t < horizon:
            attempts += 1
            if t >= horizon - 300:
                late += 1
            t += backoff.failed(key, RetryKind.UNAVAILABLE)
    assert attempts < 25_000
    assert late / 300 < 10  # attempts per second once settled: ~7


def test_success_and_a_new_kind_of_failure_start_over() -> None:
    backoff = Backoff()
    for _ in range(10):
        backoff.failed("a", RetryKind.UNAVAILABLE)
    assert backoff.attempts("a") == 10
    assert backoff.failed("a", RetryKind.CONFLICT) <= SCHEDULES[RetryKind.CONFLICT].ceiling(1)
    assert backoff.attempts("a") == 1
    backoff.failed("b", RetryKind.UNAVAILABLE)
    backoff.succeeded("a")
    assert backoff.attempts("a") == 0
    assert backoff.attempts("b") == 1  # per resource
    assert backoff.failed("a", RetryKind.UNAVAILABLE) == SCHEDULES[RetryKind.UNAVAILABLE].floor


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError):
        Schedule(floor=0, base=1, cap=10)
    with pytest.raises(ValueError):
        Schedule(floor=5, base=1, cap=1)
