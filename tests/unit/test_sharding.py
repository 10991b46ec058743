"""core.sharding: the shard of an object, the per-shard finalizer, the deletion handover
and the layout lease's decisions (pure; no cluster)."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from vectorschema.api import FINALIZER
from vectorschema.core.sharding import (
    LayoutLease,
    LeaseRecord,
    ShardConfig,
    Step,
    finalizer_for,
    handles_deletion,
    owns,
    parse_config,
    shard_of,
)

UIDS = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(3000)]


def test_shard_of_is_stable_and_fixed() -> None:
    # Fixed values: a change of the hash would move every object on upgrade.
    assert shard_of("3f1c1c8e-0d7a-4a53-9f0b-1b2e3c4d5e6f", 2) == shard_of(
        "3f1c1c8e-0d7a-4a53-9f0b-1b2e3c4d5e6f", 2
    )
    assert [shard_of(u, 7) for u in UIDS[:8]] == [shard_of(u, 7) for u in UIDS[:8]]
    assert (
        shard_of("a", 3)
        == int.from_bytes(
            bytes.fromhex("ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb")[:8],
            "big",
        )
        % 3
    )


@pytest.mark.parametrize("count", [2, 3, 5])
def test_every_object_has_exactly_one_owner(count: int) -> None:
    configs = [ShardConfig(i, count, leased=True) for i in range(count)]
    for uid in UIDS:
        assert sum(owns(c, uid) for c in configs) == 1


@pytest.mark.parametrize("count", [2, 3, 4])
def test_spread_is_even(count: int) -> None:
    spread = Counter(shard_of(u, count) for u in UIDS)
    assert set(spread) == set(range(count))
    assert max(spread.values()) < 1.2 * len(UIDS) / count


def test_unsharded_owns_everything_with_the_plain_finalizer() -> None:
    config = parse_config({})
    assert config == ShardConfig(0, 1, leased=False)
    assert all(owns(config, u) for u in UIDS[:50])
    assert finalizer_for(0) == FINALIZER
    assert finalizer_for(2) == f"{FINALIZER}-shard-2"


def test_parse_config() -> None:
    env = {"VECTORSCHEMA_SHARD_INDEX": "1", "VECTORSCHEMA_SHARD_COUNT": "3"}
    assert parse_config(env) == ShardConfig(1, 3, leased=True)
    assert parse_config({"VECTORSCHEMA_SHARD_COUNT": "1"}) == ShardConfig(0, 1, leased=True)
    with pytest.raises(ValueError, match="integers"):
        parse_config({"VECTORSCHEMA_SHARD_COUNT": "two"})
    with pytest.raises(ValueError, match=r"0\.\.1"):
        parse_config({"VECTORSCHEMA_SHARD_INDEX": "2", "VECTORSCHEMA_SHARD_COUNT": "2"})
    with pytest.raises(ValueError, match="1 or more"):
        ShardConfig(0, 0)


def test_deletion_is_handed_over_by_finalizers() -> None:
    """After 2 -> 3 shards, an object whose old shard's finalizer is still on it is released
    by that old shard index until the new owner's finalizer is there, then by the owner:
    exactly one handles it at any time."""
    count = 3
    configs = [ShardConfig(i, count, leased=True) for i in range(count)]
    for uid in UIDS[:300]:
        owner = shard_of(uid, count)
        old = shard_of(uid, 2)
        for finalizers in ([finalizer_for(old)], [finalizer_for(old), finalizer_for(owner)]):
            handlers = [c.index for c in configs if handles_deletion(c, uid, finalizers)]
            if finalizer_for(owner) in finalizers or old == owner:
                assert handlers == [owner]
            else:
                assert sorted(handlers) == sorted({owner, old})
                # the owner's kopf has no finalizer there: it cannot run a delete handler
                # (kopf only runs on.delete while its own finalizer blocks the deletion)


def test_lease_create_renew_wait_take() -> None:
    lease = LayoutLease("3-shards", duration=15.0, margin=2.0)
    assert not lease.active(0.0)
    assert lease.decide(None, 0.0) is Step.CREATE
    lease.written(0.0)
    assert lease.active(12.9) and not lease.active(13.0)
    ours = LeaseRecord("3-shards", "t1", "5")
    assert lease.decide(ours, 5.0) is Step.RENEW

    other = LeaseRecord("2-shards", "t1", "7")
    new = LayoutLease("3-shards", duration=15.0)
    assert new.decide(other, 100.0) is Step.WAIT
    assert new.decide(other, 114.9) is Step.WAIT
    # the other layout renews: the clock starts again
    renewed = LeaseRecord("2-shards", "t2", "8")
    assert new.decide(renewed, 114.9) is Step.WAIT
    assert new.decide(renewed, 129.8) is Step.WAIT
    assert not new.active(129.8)
    assert new.decide(renewed, 129.9) is Step.TAKE


def test_a_holder_stops_before_a_waiter_may_take() -> None:
    """The old layout's last successful write was sent at s; the waiter cannot have seen
    it before s, so it takes at >= s + duration; the holder stopped at s + duration - margin."""
    holder = LayoutLease("2-shards", duration=10.0, margin=2.0)
    holder.written(50.0)
    waiter = LayoutLease("3-shards", duration=10.0)
    record = LeaseRecord("2-shards", "t50", "9")
    assert waiter.decide(record, 50.0) is Step.WAIT
    take_at = next(t / 10 for t in range(500, 700) if waiter.decide(record, t / 10) is Step.TAKE)
    assert not holder.active(take_at - 1.0)
    assert take_at >= 60.0
