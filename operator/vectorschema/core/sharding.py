"""Sharding: which operator process acts on which Namespace resource, and when.

N shards split the Namespace resources by a stable hash of the object UID modulo N
(`shard_of`). Each shard carries its own finalizer (`finalizer_for`; shard 0 keeps the
unsharded name, so a single replica and shard 0 agree), so the kopf of one shard never
adds or removes another shard's finalizer.

Moving from one layout (N shards) to another (M shards) is fenced by the *shard layout
lease*: a process acts only while its layout holds that lease (`LayoutLease`), and a new
layout takes the lease only after the old one stopped renewing it for a full lease
duration. Within a layout, each object has exactly one owner; across layouts, at most one
layout acts at a time. Deletion is handed over by finalizers: a shard keeps handling the
deletion of an object it no longer owns while its own finalizer is on it and the new
owner's is not yet (`handles_deletion`), so an object deleted during the move is released
exactly once.

Pure functions and a small state machine: unit-tested without a cluster (the lease calls
themselves are in `vectorschema.k8s.sharding`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from vectorschema.api.constants import FINALIZER


@dataclass(frozen=True)
class ShardConfig:
    """This process's shard: `index` in `0 .. count-1`. `leased` when configured
    explicitly (then the layout lease fences re-sharding)."""

    index: int = 0
    count: int = 1
    leased: bool = False

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"shard count must be 1 or more, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be in 0..{self.count - 1}, not {self.index}")

    @property
    def layout(self) -> str:
        """The layout this process belongs to, as recorded in the lease."""
        return f"{self.count}-shards"

    @property
    def name(self) -> str:
        return f"shard-{self.index}-of-{self.count}"


def parse_config(env: Mapping[str, str]) -> ShardConfig:
    """`VECTORSCHEMA_SHARD_INDEX` / `VECTORSCHEMA_SHARD_COUNT`; unset: one unleased shard."""
    raw_count = env.get("VECTORSCHEMA_SHARD_COUNT", "").strip()
    raw_index = env.get("VECTORSCHEMA_SHARD_INDEX", "").strip()
    if not raw_count and not raw_index:
        return ShardConfig()
    try:
        count = int(raw_count or "1")
        index = int(raw_index or "0")
    except ValueError:
        raise ValueError(
            "VECTORSCHEMA_SHARD_INDEX and VECTORSCHEMA_SHARD_COUNT must be integers, "
            f"not {raw_index!r} and {raw_count!r}"
        ) from None
    return ShardConfig(index=index, count=count, leased=True)


def shard_of(uid: str, count: int) -> int:
    """The shard of an object: the first 8 bytes of sha256(uid), modulo `count`.

    Stable across processes, Python versions and restarts (unlike `hash()`)."""
    digest = hashlib.sha256(uid.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def finalizer_for(index: int) -> str:
    """Shard `index`'s finalizer; shard 0 uses the unsharded name."""
    return FINALIZER if index == 0 else f"{FINALIZER}-shard-{index}"


def owns(config: ShardConfig, uid: str | None) -> bool:
    """This shard reconciles the object (objects without a UID: shard 0)."""
    if config.count == 1:
        return True
    return (shard_of(uid, config.count) if uid else 0) == config.index


def handles_deletion(config: ShardConfig, uid: str | None, finalizers: Iterable[str]) -> bool:
    """This shard runs the release of the object: it owns it, or (after a re-sharding) its
    own finalizer is still on the object and the owner's is not yet."""
    if owns(config, uid):
        return True
    present = set(finalizers)
    owner = shard_of(uid, config.count) if uid else 0
    return finalizer_for(config.index) in present and finalizer_for(owner) not in present


# --- the shard layout lease ------------------------------------------------------------


@dataclass(frozen=True)
class LeaseRecord:
    """What the lease object said: its holder (a layout), renew time as written, and the
    object's resourceVersion (for guarded writes)."""

    holder: str | None
    renew_time: str | None
    resource_version: str


class Step(StrEnum):
    CREATE = "create"  # no lease yet: create it for our layout
    RENEW = "renew"  # ours: write a fresh renewTime
    TAKE = "take"  # another layout's, expired by our clock: take it over
    WAIT = "wait"  # another layout's, still alive


@dataclass
class LayoutLease:
    """Client-side state of the layout lease, in the manner of client-go's leader election:
    time is only ever measured on this process's monotonic clock.

    - `held_until`: we may act until then: the send time of our last successful write plus
      the lease duration, minus `margin` (so a pass started just before still finishes
      before anyone else may start).
    - another layout's record is considered expired once it has not changed for a whole
      lease duration since we first saw it.
    """

    layout: str
    duration: float
    margin: float = 2.0
    held_until: float = float("-inf")
    seen: LeaseRecord | None = None
    seen_at: float = float("-inf")

    def active(self, now: float) -> bool:
        return now < self.held_until

    def decide(self, record: LeaseRecord | None, now: float) -> Step:
        """What to do after reading `record` (None: no lease object) at `now`."""
        if record is None:
            return Step.CREATE
        if record.holder == self.layout:
            return Step.RENEW
        key = (record.holder, record.renew_time)
        if self.seen is None or (self.seen.holder, self.seen.renew_time) != key:
            self.seen, self.seen_at = record, now
        if now - self.seen_at >= self.duration:
            return Step.TAKE
        self.held_until = float("-inf")
        return Step.WAIT

    def written(self, sent_at: float) -> None:
        """Our write (sent at `sent_at`) succeeded: we hold the lease for a duration."""
        self.held_until = sent_at + self.duration - self.margin

    def lost(self) -> None:
        """A write failed in a way that leaves us unsure: stop acting at once."""
        self.held_until = float("-inf")
