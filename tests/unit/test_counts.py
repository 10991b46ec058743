"""Points at risk: one count per plan, Qdrant's estimate (said so) when exact is too slow."""

from __future__ import annotations

import pytest

from vectorschema.api import VectorType
from vectorschema.controller.counts import CountCache
from vectorschema.core.actions import AtRisk, Plan, RemoveVector
from vectorschema.core.report import points_at_risk
from vectorschema.core.schema import ObservedCollection, VectorDef


class TooSlow(Exception):
    pass


class Counter:
    """Counts with a given cost; records every count that reached the server."""

    def __init__(self, counts: dict[str, int], *, exact_times_out: bool = False) -> None:
        self.counts = counts
        self.exact_times_out = exact_times_out
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, collection: str, vector: str, exact: bool) -> int:
        self.calls.append((vector, exact))
        if exact and self.exact_times_out:
            raise TooSlow("timed out")
        return self.counts[vector] if exact else round(self.counts[vector], -2)


def removing(*names: str) -> Plan:
    actions = tuple(
        RemoveVector(old=VectorDef(name=n, type=VectorType.SPARSE), detail="") for n in names
    )
    return Plan("c", actions, "fp")


OBSERVED = ObservedCollection(name="c", vectors=(), points_count=9999)


def test_exact_count_is_the_largest_per_vector() -> None:
    counter = Counter({"a": 5, "b": 7})
    assert points_at_risk(removing("a", "b"), OBSERVED, counter, (TooSlow,)) == AtRisk(7)
    assert points_at_risk(removing(), OBSERVED, counter, (TooSlow,)) == AtRisk(0)
    assert points_at_risk(removing("a"), None, counter, (TooSlow,)) == AtRisk(0)


def test_a_slow_exact_count_falls_back_to_the_estimate() -> None:
    counter = Counter({"a": 1234, "b": 5678}, exact_times_out=True)
    at_risk = points_at_risk(removing("a", "b"), OBSERVED, counter, (TooSlow,))
    assert at_risk == AtRisk(5700, exact=False)
    assert at_risk.describe() == "about 5700 point(s)"
    assert AtRisk(3).describe() == "3 point(s)"
    assert counter.calls == [("a", True), ("a", False), ("b", False)]


def test_other_errors_are_not_hidden() -> None:
    def broken(collection: str, vector: str, exact: bool) -> int:
        raise RuntimeError("server down")

    with pytest.raises(RuntimeError):
        points_at_risk(removing("a"), OBSERVED, broken, (TooSlow,))


def test_one_count_per_plan_however_many_passes() -> None:
    cache = CountCache()
    counter = Counter({"a": 5})
    plan = removing("a")
    for _pass in range(100):  # a plan waiting for approval, resynced again and again
        at_risk = cache.get(("q", "fp1"), lambda: points_at_risk(plan, OBSERVED, counter))
        assert at_risk == AtRisk(5)
    assert len(counter.calls) == 1
    assert cache.counted == 1
    cache.get(("q", "fp2"), lambda: points_at_risk(plan, OBSERVED, counter))  # a new plan
    cache.get(("other", "fp1"), lambda: points_at_risk(plan, OBSERVED, counter))  # server
    assert len(counter.calls) == 3


def test_failed_counts_are_not_cached() -> None:
    cache = CountCache()
    attempts = []

    def failing() -> AtRisk:
        attempts.append(1)
        raise TooSlow

    for _ in range(3):
        with pytest.raises(TooSlow):
            cache.get("fp", failing)
    assert len(attempts) == 3 and len(cache) == 0


def test_the_cache_is_bounded_lru() -> None:
    cache = CountCache(max_entries=2)
    cache.get("a", lambda: AtRisk(1))
    cache.get("b", lambda: AtRisk(2))
    cache.get("a", lambda: AtRisk(99))  # a hit: "a" is now the most recent
    cache.get("c", lambda: AtRisk(3))  # evicts "b"
    assert len(cache) == 2
    assert cache.get("a", lambda: AtRisk(99)) == AtRisk(1)
    assert cache.get("b", lambda: AtRisk(22)) == AtRisk(22)
    with pytest.raises(ValueError):
        CountCache(max_entries=0)


def test_the_counts_of_a_collection_go_with_its_resource() -> None:
    cache = CountCache()
    cache.get(("srv", "fp1", "team-a_a"), lambda: AtRisk(1))
    cache.get(("srv", "fp2", "team-a_b"), lambda: AtRisk(2))
    cache.forget_collection("team-a_a")
    assert len(cache) == 1
    assert cache.get(("srv", "fp2", "team-a_b"), lambda: AtRisk(99)) == AtRisk(2)
