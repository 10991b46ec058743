"""Issue 17, items 3 and 4: what one tenant may cost everyone else is bounded by the
admin, every per-resource structure goes with its resource, and the admission webhook
reads no Secret and sends no tenant key.

The churn test drives the real structures of the operator (locks, wake-ups and backoff,
observations, metrics, the pool and its per-server limiter with tenant shares, the Secret
cache, the scrubber, the worker shares) through a thousand create/reconcile/delete cycles
and checks that every map is back to its size before the churn.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from conftest import dense, inline
from test_status_writing import Store, connect_to, namespace_obj

from vectorschema.api import NamespaceResource, Reason
from vectorschema.controller.backoff import RetryKind
from vectorschema.controller.errors import ConnectionRefused
from vectorschema.controller.locks import ResourceLocks
from vectorschema.controller.passes import run_pass
from vectorschema.controller.results import Observation, Observations
from vectorschema.controller.shares import TenantShares
from vectorschema.core.admission import unknown_plan_warning
from vectorschema.core.caps import Caps
from vectorschema.core.policy import REDACTED, InvalidKey, Policy, Scrubber, api_key_from_secret
from vectorschema.core.schema import Capabilities
from vectorschema.k8s import admission, handlers
from vectorschema.k8s.connection import LabelledSecrets, SecretCache
from vectorschema.k8s.metrics import Metrics
from vectorschema.k8s.release import release
from vectorschema.k8s.wakeups import Wakeups
from vectorschema.qdrant import pool
from vectorschema.qdrant.client import ClientGateway, Target
from vectorschema.qdrant.limits import TENANT, CallLimiter, LimitTimeout

LABEL = {"vectorschema.dev/qdrant-credentials": "true"}


def secret(value: bytes) -> dict[str, Any]:
    return {"labels": LABEL, "data": {"k": base64.b64encode(value).decode()}}


# --- API keys ------------------------------------------------------------------------------


def test_an_api_key_over_the_cap_is_refused_naming_the_secret_and_never_decoded() -> None:
    huge = b"A" * 200_000  # one line, printable: only its size is wrong
    fetched: list[tuple[str, str]] = []

    def fetch(ns: str, name: str) -> dict[str, Any]:
        fetched.append((ns, name))
        return secret(huge)

    scrubber_before = pool_scrubber_size()
    store = LabelledSecrets(fetch, Policy(), max_key_bytes=4096)
    with pytest.raises(ConnectionRefused) as refused:
        store.read("team-a", "big", "k")
    assert refused.value.reason is Reason.SECRET_INVALID
    message = str(refused.value)
    assert message.startswith("spec.apiKeySecretRef.key".replace("spec.", "spec.qdrant."))
    assert "Secret team-a/big" in message and "at most 4096" in message
    assert "VECTORSCHEMA_MAX_API_KEY_BYTES" in message
    assert pool_scrubber_size() == scrubber_before  # never remembered: it goes nowhere
    # with the cache, a refused key is not fetched again until its Secret changes
    cache = SecretCache()
    cached = LabelledSecrets(fetch, Policy(), cache=cache, max_key_bytes=4096)
    for _ in range(3):
        with pytest.raises(ConnectionRefused, match="at most 4096"):
            cached.read("team-a", "big", "k")
    assert len(fetched) == 2
    cache.invalidate("team-a", "big")
    with pytest.raises(ConnectionRefused):
        cached.read("team-a", "big", "k")
    assert len(fetched) == 3
    # the cap is the admin's: a key at the cap is fine
    assert LabelledSecrets(lambda ns, n: secret(b"B" * 4096), Policy()).read("a", "b", "k")


def pool_scrubber_size() -> tuple[int, int]:
    from vectorschema.core.policy import SCRUBBER

    return SCRUBBER.size


def test_api_key_from_secret_caps_the_size() -> None:
    assert api_key_from_secret(b"x" * 10 + b"\n", max_bytes=10) == "x" * 10
    with pytest.raises(InvalidKey, match="at most 10"):
        api_key_from_secret(b"x" * 11, max_bytes=10)


def test_only_the_referenced_key_is_kept_and_a_change_drops_it() -> None:
    reads: list[str] = []

    def fetch(ns: str, name: str) -> dict[str, Any]:
        reads.append(name)
        return {
            "labels": LABEL,
            "data": {
                "k": base64.b64encode(b"key-1").decode(),
                "other": base64.b64encode(b"x" * 100_000).decode(),
            },
        }

    cache = SecretCache(max_entries=2)
    store = LabelledSecrets(fetch, Policy(), cache=cache)
    assert store.read("a", "s", "k") == "key-1"
    assert store.read("a", "s", "k") == "key-1"
    assert reads == ["s"]  # read once; only that key is kept, not the Secret
    assert cache.sizes()["secret_keys"] == 1
    cache.invalidate("a", "s")  # its watch event
    assert cache.sizes()["secret_keys"] == 0
    store.read("a", "s", "k")
    assert reads == ["s", "s"]
    for i in range(5):  # bounded, least recently used first
        store.read("a", f"s{i}", "k")
    assert cache.sizes()["secret_keys"] == 2


def test_a_read_that_raced_with_a_change_is_not_kept() -> None:
    cache = SecretCache()
    stamp = cache.stamp()
    cache.invalidate("a", "s")  # the Secret changed while it was being read
    cache.put("a", "s", "k", "old", stamp)
    assert cache.get("a", "s", "k") is None
    cache.put("a", "s", "k", "new", cache.stamp())
    assert cache.get("a", "s", "k") == "new"
    assert cache.sizes() == {"secret_keys": 1, "secret_changes": 0}


# --- the scrubber ----------------------------------------------------------------------------


def test_the_scrubber_is_bounded_in_bytes_and_keeps_pinned_values() -> None:
    scrubber = Scrubber(max_bytes=64 * 1024)
    scrubber.remember("operator-key-0123", pin=True)
    for i in range(200):
        scrubber.remember(f"{i:04d}" + "k" * 4000)
    values, size = scrubber.size
    assert size <= 64 * 1024 and values < 200 * 3
    assert scrubber.scrub("a operator-key-0123 b") == f"a {REDACTED} b"
    newest = "0199" + "k" * 4000
    assert scrubber.scrub(f"x{newest}y") == f"x{REDACTED}y"


def test_scrubbing_replaces_the_longest_form_leftmost() -> None:
    scrubber = Scrubber()
    scrubber.remember("abcd")
    scrubber.remember("abcdefgh")
    assert scrubber.scrub("1abcdefgh2abcd3abc") == f"1{REDACTED}2{REDACTED}3abc"
    assert scrubber.scrub("") == ""


# --- caps ---------------------------------------------------------------------------------


def test_caps_from_env_report_bad_values_and_keep_the_default() -> None:
    caps = Caps.from_env({"VECTORSCHEMA_MAX_VECTORS": "3", "VECTORSCHEMA_MAX_SHARD_NUMBER": "x"})
    assert caps.vectors == 3 and caps.shard_number == Caps().shard_number
    assert caps.problems and "VECTORSCHEMA_MAX_SHARD_NUMBER" in caps.problems[0]


def resource(spec: dict[str, Any], name: str = "tenant", uid: str = "u-1") -> NamespaceResource:
    return NamespaceResource.model_validate(namespace_obj(spec, name=name, uid=uid))


SPEC = {"plugins": [inline("text", dense("text_v", 4))]}


@pytest.mark.parametrize(
    ("env", "spec", "field"),
    [
        ({"VECTORSCHEMA_MAX_SHARD_NUMBER": "2"}, {**SPEC, "shardNumber": 3}, "spec.shardNumber"),
        (
            {"VECTORSCHEMA_MAX_REPLICATION_FACTOR": "1"},
            {**SPEC, "replicationFactor": 2},
            "spec.replicationFactor",
        ),
        ({"VECTORSCHEMA_MAX_DIMENSIONS": "3"}, SPEC, "spec.plugins"),
        (
            {"VECTORSCHEMA_MAX_VECTORS": "1"},
            {"plugins": [inline("text", dense("a", 4), dense("b", 4))]},
            "spec.plugins",
        ),
    ],
)
def test_a_spec_over_a_cap_stalls_naming_the_field_before_connecting(
    env: dict[str, str], spec: dict[str, Any], field: str
) -> None:
    store = Store(namespace_obj(spec))

    def never(resource: Any) -> Any:
        def connect() -> Any:
            raise AssertionError("connected to Qdrant for a spec over a cap")

        return connect

    result = run_pass(store, "team-a", "tenant", {}, never, caps=Caps.from_env(env))
    assert result is not None
    stalled = result.status.condition("Stalled")
    assert stalled is not None and stalled.reason == Reason.LIMIT_EXCEEDED
    assert stalled.message.startswith(field + ":")
    assert next(iter(env)) in stalled.message


def test_a_plan_with_more_steps_than_the_cap_is_refused_whole(qdrant: ClientGateway) -> None:
    store = Store(namespace_obj(SPEC))
    assert run_pass(store, "team-a", "tenant", {}, connect_to(qdrant)) is not None
    wider = {"plugins": [inline("text", dense("text_v", 4), dense("b", 4), dense("c", 4))]}
    store.obj = {**store.obj, "spec": wider}  # type: ignore[dict-item]
    store.obj["metadata"]["generation"] = 2
    result = run_pass(store, "team-a", "tenant", {}, connect_to(qdrant), caps=Caps(steps=1))
    assert result is not None
    stalled = result.status.condition("Stalled")
    assert stalled is not None and stalled.reason == Reason.LIMIT_EXCEEDED
    assert "2 in-place steps" in stalled.message and "VECTORSCHEMA_MAX_STEPS_PER_PASS" in (
        stalled.message
    )
    live = qdrant.observe("team-a_tenant")
    assert live is not None and live.names == ["text_v"]  # nothing of it ran


def test_the_newest_resources_beyond_the_namespace_cap_are_stalled() -> None:
    caps = Caps(namespaces=2)
    index = {"team-a": [(f"2026-01-01T00:00:0{i}Z", f"r{i}") for i in range(4)]}
    refusals = [handlers.over_cap("team-a", f"r{i}", index, caps) for i in range(4)]  # type: ignore[arg-type]
    assert refusals[:2] == [None, None]
    assert all(r is not None and r.startswith("metadata.namespace:") for r in refusals[2:])
    store = Store(namespace_obj(SPEC))
    result = run_pass(store, "team-a", "tenant", {}, lambda r: None, over_cap=refusals[3])  # type: ignore[arg-type,return-value]
    assert result is not None
    stalled = result.status.condition("Stalled")
    assert stalled is not None and stalled.reason == Reason.LIMIT_EXCEEDED


def test_the_webhook_refuses_what_the_caps_forbid_naming_the_field() -> None:
    doc = {
        "metadata": {"name": "tenant", "namespace": "team-a", "uid": "u-1"},
        "spec": {**SPEC, "shardNumber": 9},
    }
    answer = asyncio.run(
        admission.review(
            doc,
            None,
            lambda: {},
            policy=Policy(),
            plan_seconds=5,
            read_uid=lambda ns, n: None,
            caps=Caps(shard_number=2),
        )
    )
    assert answer.refusal is not None and answer.refusal.startswith("spec.shardNumber: 9")
    # with an authenticated caller, a CREATE over the per-namespace cap is told so
    doc["spec"]["shardNumber"] = 1
    told = asyncio.run(
        admission.review(
            doc,
            None,
            lambda: {},
            policy=Policy(),
            plan_seconds=5,
            read_uid=lambda ns, n: None,
            caps=Caps(namespaces=3),
            served=lambda ns: 3,
            authenticated=True,
        )
    )
    assert told.refusal is None
    assert any("already holds 3 Namespace resources" in w for w in told.warnings)


# --- tenant shares ------------------------------------------------------------------------------


def test_a_tenant_holding_its_whole_share_of_a_server_does_not_block_another() -> None:
    limiter = CallLimiter(max_in_flight=4, wait_timeout=0.3, per_tenant=2)
    release_hog = threading.Event()
    holding = threading.Barrier(3)

    def hog() -> None:
        TENANT.set("hostile")
        with limiter.slot():
            holding.wait()
            release_hog.wait(10)

    threads = [threading.Thread(target=hog) for _ in range(2)]
    for t in threads:
        t.start()
    holding.wait(10)
    try:
        token = TENANT.set("hostile")
        with pytest.raises(LimitTimeout, match="tenant 'hostile'"), limiter.slot():
            pass  # its third call waits on its own share
        TENANT.reset(token)
        token = TENANT.set("victim")
        with limiter.slot():  # the victim gets a server slot at once
            assert limiter.in_flight == 3
        TENANT.reset(token)
    finally:
        release_hog.set()
        for t in threads:
            t.join(10)
    assert limiter.tenants == 0  # shares go when their last call does


def test_a_tenant_holding_its_share_of_workers_does_not_block_another() -> None:
    async def scenario() -> list[str]:
        shares = TenantShares(per_tenant=2)
        order: list[str] = []
        gate = asyncio.Event()

        async def work(tenant: str, tag: str) -> None:
            async with shares.hold(tenant):
                order.append(tag)
                if tenant == "hostile":
                    await gate.wait()

        hostile = [asyncio.create_task(work("hostile", f"h{i}")) for i in range(5)]
        await asyncio.sleep(0.05)
        await asyncio.wait_for(work("victim", "v"), 5)  # not queued behind the hostile
        assert shares.in_use("hostile") == 5
        gate.set()
        await asyncio.gather(*hostile)
        assert shares.sizes() == {"tenant_shares": 0}
        return order

    order = asyncio.run(scenario())
    assert order[:3] == ["h0", "h1", "v"]


# --- item 4: the webhook reads no Secret ----------------------------------------------------


def test_an_unauthenticated_create_gets_no_plan_and_reads_nothing_but_plugins() -> None:
    """Without caller authentication a CREATE may be forged: the answer is the same for a
    collection that exists (with an owner, vectors, points) and one that does not, and
    neither a Secret nor a connection is ever asked for."""
    doc = {
        "metadata": {"name": "probe", "namespace": "victim", "uid": "x"},
        "spec": {
            **SPEC,
            "collectionName": "victim_catalog",
            "adopt": True,
            "qdrant": {
                "url": "http://127.0.0.1:1",
                "apiKeySecretRef": {"name": "victim-key", "key": "k"},
            },
        },
    }
    policy = Policy.from_env({"VECTORSCHEMA_ALLOWED_QDRANT_URLS": "http://127.0.0.1:1"})

    def answer(observed: Any) -> admission.Answer:
        return asyncio.run(
            admission.review(
                doc,
                None,
                lambda: {},
                policy=policy,
                plan_seconds=5,
                read_uid=lambda ns, n: None,
                observed=observed,
            )
        )

    seen = Observation("u-victim", "victim_catalog", "http://127.0.0.1:1", Capabilities(), None)
    a = answer(lambda key: seen)
    b = answer(lambda key: None)
    assert a == b and a.refusal is None
    assert a.warnings == [unknown_plan_warning(admission.NO_OBSERVATION)]


def test_an_unauthenticated_create_does_not_tell_which_names_exist() -> None:
    """Asking the API server whether the object exists would tell a forged CREATE which
    names another namespace holds: without an authenticated caller it is not asked."""
    doc = {"metadata": {"name": "catalog", "namespace": "victim", "uid": "x"}, "spec": SPEC}

    def never(ns: str, name: str) -> str | None:
        raise AssertionError("asked the API server whether the object exists")

    answer = asyncio.run(
        admission.review(doc, None, lambda: {}, policy=Policy(), plan_seconds=5, read_uid=never)
    )
    assert answer.warnings == [unknown_plan_warning(admission.NO_OBSERVATION)]


def test_a_vouched_update_plans_against_the_operators_observation(qdrant: ClientGateway) -> None:
    store = Store(namespace_obj(SPEC))
    result = run_pass(store, "team-a", "tenant", {}, connect_to(qdrant))
    assert result is not None and result.observation is not None
    assert result.observation.observed is not None
    assert result.observation.observed.names == ["text_v"]
    observations = Observations()
    observations.put(("team-a", "tenant"), result.observation)
    old = store.get("team-a", "tenant")
    new = {**old, "spec": {"plugins": [inline("text", dense("other", 4))]}}
    answer = asyncio.run(
        admission.review(
            new,
            old,
            lambda: {},
            policy=Policy(),
            plan_seconds=5,
            read_uid=lambda ns, n: "u-1",
            observed=observations.get,
            connection_of=lambda r: "embedded",
        )
    )
    assert answer.refusal is None
    assert any("removes vector text_v" in w for w in answer.warnings), answer.warnings
    assert any("as the operator last observed it" in w for w in answer.warnings)
    # another object's observation (another uid) is never used
    stranger = {**old, "metadata": {**old["metadata"], "uid": "u-2"}}
    other = asyncio.run(
        admission.review(
            {**new, "metadata": stranger["metadata"]},
            stranger,
            lambda: {},
            policy=Policy(),
            plan_seconds=5,
            read_uid=lambda ns, n: "u-2",
            observed=observations.get,
            connection_of=lambda r: "embedded",
        )
    )
    assert other.warnings == [unknown_plan_warning(admission.NO_OBSERVATION)]


# --- churn: nothing outlives its resource --------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def quiet_pool() -> Iterator[None]:
    pool.configure(pool.Limits(max_in_flight=4, per_tenant=1))
    yield
    pool.configure(pool.Limits())


def test_a_thousand_create_delete_cycles_leave_every_map_as_it_was(
    tmp_path: Path, quiet_pool: None, capsys: pytest.CaptureFixture[str]
) -> None:
    qdrant = ClientGateway.open(path=":memory:")  # a store of its own, in memory
    memo = kopf.Memo()
    memo.wakeups = Wakeups()
    memo.locks = ResourceLocks()
    memo.observations = Observations()
    memo.metrics = Metrics()
    memo.secrets = SecretCache()
    shares = TenantShares(per_tenant=2)
    scrubber = Scrubber(max_bytes=32 * 1024)

    def sizes() -> dict[str, int]:
        w: Wakeups = memo.wakeups
        return {
            **memo.locks.sizes(),
            **memo.observations.sizes(),
            **memo.secrets.sizes(),
            **shares.sizes(),
            **{f"pool_{k}": v for k, v in pool.sizes().items() if k != "limiters"},
            "wakers": len(w.wakers),
            "seen": len(w.seen),
            "passes": len(w.passes),
            "wakes": len(w.wakes),
            "backoff": len(w.backoff._attempts),
            "metrics": len(memo.metrics.snapshot()),
        }

    spec = {**SPEC, "deletionPolicy": "Delete"}

    def cycle(i: int) -> None:
        name = f"r{i}"
        key = ("team-a", name)
        body = namespace_obj(spec, name=name, uid=f"u-{i}")
        store = Store(body)
        w: Wakeups = memo.wakeups
        w.register(key)
        w.namespace_event(key, "ADDED", body)
        w.backoff.failed(key, RetryKind.UNAVAILABLE)
        # a client of the tenant's own server (never called), as a pass with an
        # apiKeySecretRef gets one: mostly the tenant's shared key (its client stays, held
        # by a long-lived resource), every 50th a key of its own (its client is made and
        # closed with it; building a client costs ~0.1 s, so not for every cycle)
        api_key = f"key-{i}" if i % 50 == 0 else "shared-key"
        pool.connect_to(Target(url="http://127.0.0.1:1", api_key=api_key), user=key)
        memo.secrets.put("team-a", f"s{i}", "k", f"key-{i}", memo.secrets.stamp())
        scrubber.remember(f"key-{i:06d}-" + "z" * 64)

        async def in_share() -> Any:
            async with shares.hold("team-a"):
                token = TENANT.set("team-a")
                try:
                    return run_pass(store, "team-a", name, {}, connect_to(qdrant), locks=memo.locks)
                finally:
                    TENANT.reset(token)

        result = asyncio.run(in_share())
        assert result is not None and result.observation is not None
        memo.observations.put(key, result.observation)
        memo.metrics.observe_pass(key, result, 0.01)
        # deletion: the finaliser, then the DELETED event
        deleting = {**store.get("team-a", name)}
        deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        release(
            deleting,
            0,
            retries=2,
            delay=0.1,
            connector_for=connect_to(qdrant),
            locks=memo.locks,
        )
        memo.secrets.invalidate("team-a", f"s{i}")
        w.unregister(key, w.wakers[key])
        w.namespace_event(key, "DELETED", deleting)
        handlers.forget(memo, key)

    # a resource that lives through the churn, on the tenant's shared key
    pool.connect_to(Target(url="http://127.0.0.1:1", api_key="shared-key"), user=("team-a", "x"))
    for i in range(20):  # warm up: imports, caches, the store's files
        cycle(i)
    before, rss_before = sizes(), rss_bytes()
    started = time.monotonic()
    for i in range(20, 1020):
        cycle(i)
    after, rss_after = sizes(), rss_bytes()
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert scrubber.size[1] <= 32 * 1024
    grown = (rss_after - rss_before) / 2**20
    with capsys.disabled():
        print(
            f"\n1,000 create/reconcile/delete cycles in {time.monotonic() - started:.1f} s: "
            f"maps {after}; RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB"
        )
    assert grown < 64, f"RSS grew by {grown:.1f} MiB over 1,000 cycles"
    assert qdrant.observe("team-a_r1019") is None  # each collection went with its resource
    qdrant.close()
    pool.release(("team-a", "x"))
    assert pool.sizes()["gateways"] == 0
