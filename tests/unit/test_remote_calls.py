"""Remote gateways under load and faults: concurrency, the breaker, timeouts, rotation.

The server is the loopback `FaultyQdrant` (answers, blackholes, resets, 503s), driven
through the real qdrant-client HTTP stack.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.faulty_qdrant import FaultyQdrant, Mode

from vectorschema.qdrant import pool
from vectorschema.qdrant.breaker import Breaker, BreakerSettings, State
from vectorschema.qdrant.client import ClientGateway, Target
from vectorschema.qdrant.errors import QdrantUnavailable
from vectorschema.qdrant.limits import CallLimiter


@pytest.fixture
def server() -> Iterator[FaultyQdrant]:
    s = FaultyQdrant()
    yield s
    s.close()


@pytest.fixture
def other() -> Iterator[FaultyQdrant]:
    s = FaultyQdrant()
    yield s
    s.close()


def remote(server: FaultyQdrant, *, in_flight: int = 16, timeout: float = 1.0) -> ClientGateway:
    return ClientGateway.open_target(
        Target(url=server.url),
        timeout=timeout,
        limiter=CallLimiter(in_flight, wait_timeout=timeout),
        breaker=Breaker(server.url, BreakerSettings(probe_interval=0.5)),
    )


def hammer(fn: object, threads: int, seconds: float) -> list[BaseException]:
    errors: list[BaseException] = []
    stop = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < stop:
            try:
                fn()  # type: ignore[operator]
            except QdrantUnavailable as exc:
                errors.append(exc)
            time.sleep(0.01)

    ts = [threading.Thread(target=loop) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errors


def test_remote_calls_run_concurrently_within_the_bound(server: FaultyQdrant) -> None:
    server.delay = 0.2
    g = remote(server, in_flight=4)
    try:
        started = time.monotonic()
        ts = [threading.Thread(target=g.observe, args=(f"c{i}",)) for i in range(12)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        elapsed = time.monotonic() - started
        assert server.peak_concurrent == 4  # concurrent, and never more than the bound
        assert elapsed < 12 * 0.2  # not one after the other
    finally:
        g.close()


def test_a_dead_server_gets_a_few_probes_however_many_callers(server: FaultyQdrant) -> None:
    g = remote(server)
    try:
        g.observe("c")
        server.set_mode(Mode.RESET)
        server.reset_hits()
        errors = hammer(lambda: g.observe("c"), threads=50, seconds=3.0)
        hits = server.reset_hits()
        assert len(errors) > 1000  # the callers kept trying...
        assert hits <= 3 + 3 / 0.5 + 2  # ...the server saw the threshold, then ~2 probes/s
        assert any("no answer for" in str(e) for e in errors)
        assert g.breaker is not None and g.breaker.state is State.OPEN
        server.set_mode(Mode.OK)
        time.sleep(0.6)
        assert g.observe("c") is None  # a probe: it answers, the breaker closes
        assert g.breaker.state is State.CLOSED
    finally:
        g.close()


@pytest.mark.parametrize("mode", [Mode.BLACKHOLE, Mode.UNAVAILABLE])
def test_blackholes_and_503s_open_it_too(server: FaultyQdrant, mode: Mode) -> None:
    g = remote(server, timeout=0.5)
    try:
        server.set_mode(mode)
        errors = hammer(lambda: g.observe("c"), threads=20, seconds=2.0)
        assert errors and g.breaker is not None and g.breaker.state is State.OPEN
        assert server.hits <= 20 + 2 / 0.5 + 2  # first in-flight wave, then probes
    finally:
        g.close()


def swallow(fn: Any, *args: Any) -> None:
    with contextlib.suppress(QdrantUnavailable):
        fn(*args)


def test_a_hung_server_does_not_delay_another(server: FaultyQdrant, other: FaultyQdrant) -> None:
    hung, healthy = remote(server, timeout=3.0), remote(other)
    try:
        server.set_mode(Mode.BLACKHOLE)
        ts = [threading.Thread(target=swallow, args=(hung.observe, "c")) for _ in range(16)]
        for t in ts:
            t.start()
        time.sleep(0.2)
        started = time.monotonic()
        for i in range(20):
            healthy.observe(f"c{i}")
        assert time.monotonic() - started < 1.0
        for t in ts:
            t.join()
    finally:
        hung.close()
        healthy.close()


def test_every_call_has_a_timeout(server: FaultyQdrant) -> None:
    g = remote(server, timeout=1.0)
    try:
        server.set_mode(Mode.BLACKHOLE)
        started = time.monotonic()
        with pytest.raises(QdrantUnavailable, match="timed out"):
            g.observe("c")
        assert time.monotonic() - started < 3
    finally:
        g.close()


def test_the_local_store_keeps_its_lock() -> None:
    g = ClientGateway.open(path=":memory:")
    try:
        assert g.breaker is None and g.limiter is None
        assert g._serial("c") is g._lock and g._serial(None) is g._lock
    finally:
        g.close()


def test_the_pool_shares_one_breaker_and_limiter_per_server(server: FaultyQdrant) -> None:
    pool.close_all()
    try:
        a = pool.connect(url=server.url, api_key="one")
        b = pool.connect(url=server.url + "/", api_key="two")
        assert a is not b
        assert a.breaker is b.breaker and a.limiter is b.limiter
        assert a.limiter is not None and a.limiter.max_in_flight == 16
        assert pool.breaker_for(a.location) is a.breaker
    finally:
        pool.close_all()


def test_pool_limits_come_from_the_settings(server: FaultyQdrant) -> None:
    pool.configure(pool.Limits(timeout=0.5, max_in_flight=3, count_timeout=0.5))
    try:
        g = pool.connect(url=server.url)
        assert g.limiter is not None and g.limiter.max_in_flight == 3
        server.set_mode(Mode.BLACKHOLE)
        started = time.monotonic()
        with pytest.raises(QdrantUnavailable, match="timed out"):
            g.observe("c")
        assert time.monotonic() - started < 2.5
    finally:
        pool.configure(pool.Limits())
        pool.close_all()


def test_key_rotation_closes_and_evicts_the_old_client(server: FaultyQdrant) -> None:
    pool.close_all()
    user = ("team-a", "main")
    old = pool.connect(url=server.url, api_key="k1", user=user)
    shared = pool.connect(url=server.url, api_key="k1", user=("team-b", "x"))
    assert shared is old
    new = pool.connect(url=server.url, api_key="k2", user=user)
    assert new is not old and not old.closed  # team-b still uses k1
    pool.connect(url=server.url, api_key="k2", user=("team-b", "x"))
    assert old.closed  # nobody uses k1 any more: closed and evicted
    assert pool.connect(url=server.url, api_key="k1", user=("c", "d")) is not old
    assert new.breaker is old.breaker  # one breaker per server, whatever the key
    pool.close_all()
