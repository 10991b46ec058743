"""Issue 17, the hostile review's costs and webhook findings (/work/coord/review-17.md,
F1, F4, F7, F8, F9): each test is the reviewer's attack, run against the operator's own
handlers and structures (kopf's indexes are stood in by plain mappings of lists: what
the handlers read of them)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf
import pytest

from vectorschema.controller.locks import ResourceLocks
from vectorschema.controller.results import Observations
from vectorschema.controller.shares import TenantShares
from vectorschema.core.caps import Caps, Ranks
from vectorschema.core.policy import REDACTED, Scrubber
from vectorschema.core.scope import LabelSelector, Scope
from vectorschema.k8s import handlers, kube, sharding
from vectorschema.k8s import settings as config
from vectorschema.k8s.metrics import Metrics
from vectorschema.k8s.wakeups import Wakeups

#: The handlers module, untyped: kopf's decorators hide the handlers' signatures.
H: Any = handlers


def _body(raw: dict[str, Any]) -> Any:
    return kopf.Body(cast(Any, raw))


A_UID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


class Calls:
    """Every request the handlers make of the API server (none is expected)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[tuple[str, tuple[Any, ...]]] = []
        self.annotations: list[tuple[str, str, str]] = []
        self.statuses: list[tuple[str, dict[str, Any]]] = []
        for name in ("list_plugin_specs", "namespace_uid", "get_namespace"):
            monkeypatch.setattr(kube, name, self._record(name))

        def patch_status(ns: str, name: str, patch: dict[str, Any], rv: str | None) -> str:
            self.statuses.append((name, patch))
            return "2"

        def set_annotation(ns: str, name: str, key: str, value: str | None, rv: Any = None) -> str:
            self.annotations.append((name, key, value or ""))
            return "2"

        monkeypatch.setattr(kube, "patch_namespace_status", patch_status)
        monkeypatch.setattr(kube, "set_annotation", set_annotation)

    def _record(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            self.made.append((name, args))
            return {} if name == "list_plugin_specs" else None

        return call


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    for var in ("VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE", config.CLIENT_CA_ENV):
        monkeypatch.delenv(var, raising=False)
    yield Calls(monkeypatch)


def memo(scope: Scope | None = None) -> kopf.Memo:
    m = kopf.Memo()
    m.webhook = config.WebhookSettings(port=9443, plan_seconds=5)
    m.observations = Observations()
    m.scope = scope or Scope()
    m.gate = sharding.Gate(sharding.config_from_env({}), None)
    m.wakeups = Wakeups()
    m.locks = ResourceLocks()
    m.shares = TenantShares(4)
    m.executor = ThreadPoolExecutor(2)
    m.metrics = Metrics()
    m.ranks = Ranks()
    return m


def review(
    m: kopf.Memo, body: dict[str, Any], old: dict[str, Any] | None, **indexes: Any
) -> list[str]:
    """Call the webhook's handler as kopf does; returns the warnings (raises the refusal)."""
    warnings: list[str] = []
    kwargs: dict[str, Any] = {
        "plugin_specs": {},
        "namespace_labels": {},
        "namespace_uids": {},
        "namespaces_by_kube_namespace": {},
        **indexes,
    }
    asyncio.run(
        H.plan_at_admission(
            body=_body(body),
            old=_body(old) if old else None,
            warnings=warnings,
            memo=m,
            **kwargs,
        )
    )
    return warnings


# --- F8: a forged review costs the operator's API identity nothing -------------------------


def test_forged_reviews_make_no_api_request(calls: Calls) -> None:
    m = memo()
    for _ in range(50):  # forged CREATEs under fresh names
        new = {
            "metadata": {"namespace": "victim", "name": "x" + uuid.uuid4().hex},
            "spec": {"plugins": [{"name": "nope"}]},
        }
        warnings = review(m, new, None)
        assert any("nope" in w for w in warnings)
    for i in range(50):  # forged UPDATEs with a guessed UID
        new = {"metadata": {"namespace": "victim", "name": f"n{i}"}, "spec": {"plugins": []}}
        old = {"metadata": {"namespace": "victim", "name": f"n{i}", "uid": "guess"}, "spec": {}}
        warnings = review(m, new, old, namespace_uids={("victim", f"n{i}"): [A_UID]})
        assert any("cannot match the request" in w for w in warnings)
    assert calls.made == []


def test_the_plugins_and_the_live_uid_come_from_kopfs_indexes(calls: Calls) -> None:
    plugin = {"vectors": [{"name": "text", "size": 4, "distance": "Cosine"}]}
    new = {"metadata": {"namespace": "t", "name": "n"}, "spec": {"plugins": [{"name": "p"}]}}
    old = {"metadata": {"namespace": "t", "name": "n", "uid": A_UID}, "spec": {"plugins": []}}
    warnings = review(
        memo(), new, old, plugin_specs={"p": [plugin]}, namespace_uids={("t", "n"): [A_UID]}
    )
    assert not any("cannot match the request" in w for w in warnings)
    assert calls.made == []


# --- F7: the webhook says nothing outside its installation's scope --------------------------


def test_a_review_outside_the_installations_scope_is_neither_refused_nor_planned(
    calls: Calls,
) -> None:
    ours = Scope(namespaces=LabelSelector.parse("installation=a"))
    bad = {
        "metadata": {"namespace": "team-b", "name": "n"},
        "spec": {"plugins": [{"name": "missing"}], "qdrant": {"url": "http://10.0.0.9:6333"}},
    }
    labels = {"team-b": [{"installation": "b"}], "team-a": [{"installation": "a"}]}
    assert review(memo(ours), bad, None, namespace_labels=labels) == []
    # the same spec in a namespace this installation serves is refused
    inside = {**bad, "metadata": {"namespace": "team-a", "name": "n"}}
    with pytest.raises(kopf.AdmissionError, match=r"allowlist|missing"):
        review(memo(ours), inside, None, namespace_labels=labels)


# --- F4: beyond the per-namespace cap, no loop, no read, one status write ------------------


def entries(n: int) -> dict[str, list[tuple[str, str]]]:
    return {"t": [(f"2026-01-01T00:00:{i:02d}Z", f"r{i}") for i in range(n)]}


def body(i: int, status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    meta = {
        "namespace": "t",
        "name": f"r{i}",
        "uid": f"u{i}",
        "generation": generation,
        "resourceVersion": "1",
        "creationTimestamp": f"2026-01-01T00:00:{i:02d}Z",
    }
    return {"metadata": meta, "spec": {}, **({"status": status} if status else {})}


def served(m: kopf.Memo, i: int, index: dict[str, Any]) -> bool:
    b = body(i)
    return bool(
        H._served(
            meta=_body(b)["metadata"],
            namespace="t",
            name=f"r{i}",
            labels={},
            memo=m,
            namespace_labels={},
            namespaces_by_kube_namespace=index,
        )
    )


def event(m: kopf.Memo, b: dict[str, Any], index: dict[str, Any], kind: str = "MODIFIED") -> None:
    asyncio.run(
        H.namespace_event(
            event={"type": kind, "object": b},
            namespace="t",
            name=b["metadata"]["name"],
            body=_body(b),
            memo=m,
            namespaces_by_kube_namespace=index,
        )
    )


def test_resources_beyond_the_cap_get_no_control_loop(
    calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE", "3")
    m, index = memo(), entries(5)
    assert [served(m, i, index) for i in range(5)] == [True, True, True, False, False]


def test_beyond_the_cap_the_status_is_written_once_without_a_read(
    calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE", "3")
    m, index = memo(), entries(5)
    event(m, body(4), index)
    assert calls.made == []  # no GET
    [(name, patch)] = calls.statuses
    stalled = [c for c in patch["conditions"] if c["type"] == "Stalled"]
    assert name == "r4" and stalled[0]["reason"] == "LimitExceeded"
    # its own status write comes back as an event: nothing more is written or read
    event(m, body(4, status=patch), index)
    assert len(calls.statuses) == 1 and calls.made == []
    # a spec change (new generation) gets the status once more
    event(m, body(4, status=patch, generation=2), index)
    assert len(calls.statuses) == 2
    # a served resource's event writes nothing here (its loop does)
    event(m, body(0), index)
    assert len(calls.statuses) == 2 and calls.made == []


def test_when_a_served_resource_goes_the_next_in_line_is_touched_to_be_served(
    calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE", "3")
    m, index = memo(), entries(5)
    # one beyond the cap goes: nothing moves up
    index["t"].remove(("2026-01-01T00:00:04Z", "r4"))
    event(m, body(4), index, "DELETED")
    assert calls.annotations == []
    # a served one goes (kopf may not have dropped it from its index yet): r3 moves up
    event(m, body(1), index, "DELETED")
    assert [(n, k) for n, k, _ in calls.annotations] == [("r3", handlers.SERVED_ANNOTATION)]
    index["t"].remove(("2026-01-01T00:00:01Z", "r1"))
    assert served(m, 3, index)


# --- F9: one tenant's keys do not evict another's from the scrubber ------------------------


def test_a_tenants_many_keys_evict_only_its_own() -> None:
    s = Scrubber()
    victim = "victim-" + secrets.token_hex(16)
    s.remember(victim, tenant="victim")
    for i in range(40):  # forty labelled Secrets of one tenant, 4 KiB one-line keys each
        s.remember(f"h{i}" + "A" * 4000, tenant="hostile")
    assert s.scrub(f"error: api-key {victim}") == f"error: api-key {REDACTED}"
    forms, size = s.size
    assert size <= s.max_bytes and forms <= s.max_values
    newest = "h39" + "A" * 4000
    assert s.scrub(newest) == REDACTED  # the hostile tenant's newest key is still known


def test_the_scrubber_stays_bounded_over_many_tenants() -> None:
    s = Scrubber(max_values=64, max_bytes=8 * 1024)
    s.remember("operator-key-0123", pin=True)
    for t in range(100):
        s.remember(f"tenant-{t}-" + secrets.token_hex(8), tenant=f"t{t}")
    forms, size = s.size
    assert forms <= 64 + 8 and size <= 8 * 1024 + 200
    assert s.scrub("operator-key-0123") == REDACTED


# --- F1: labelled Secrets are listed in pages, not in one response --------------------------


def test_the_labelled_secrets_are_listed_in_small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf's own list (`fetch_objs`, the start-up list and every re-list after a 410) with
    the operator's settings: each response holds at most `LIST_CHUNK` Secrets, so 300
    labelled 1 MiB Secrets are never one 300 MiB response read, decoded and parsed whole."""
    from kopf._cogs.clients import api, fetching
    from kopf._cogs.structs import references

    settings = kopf.OperatorSettings()
    monkeypatch.setattr(config, "install_log_scrubbing", lambda: None)
    config.configure_kopf(settings, config.WebhookSettings())
    total, pages = 300, []

    async def get(url: str, **_: Any) -> dict[str, Any]:
        from urllib.parse import parse_qs, urlparse

        query = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
        start = int(query.get("continue", "0"))
        limit = int(query.get("limit", total))
        pages.append((start, limit, query.get("labelSelector")))
        end = min(start + limit, total)
        items = [{"metadata": {"name": f"s{i}", "namespace": "t"}} for i in range(start, end)]
        more = str(end) if end < total else ""
        return {
            "kind": "SecretList",
            "metadata": {"resourceVersion": "1", "continue": more},
            "items": items,
        }

    monkeypatch.setattr(api, "get", get)
    resource = references.Resource("", "v1", "secrets", namespaced=True)

    async def listed() -> list[int]:
        sizes = []
        async for items, _ in fetching.fetch_objs(
            settings=settings, resource=resource, namespace=None, logger=logging.getLogger("test")
        ):
            sizes.append(len(items))
        return sizes

    sizes = asyncio.run(listed())
    assert sum(sizes) == total
    assert max(sizes) <= config.LIST_CHUNK, f"one response held {max(sizes)} Secrets"
    assert all(selector for _, _, selector in pages)  # still only the labelled ones


# --- F10: one tenant's churning plans do not evict another's points-at-risk counts --------


def test_a_tenant_churning_plans_evicts_only_its_own_counts() -> None:
    from vectorschema.controller.counts import CountCache
    from vectorschema.core.actions import AtRisk

    cache = CountCache()
    counted: list[str] = []

    def count(what: str) -> Any:
        counted.append(what)
        return AtRisk(points=1, exact=True)

    victim = ("server", "fp-victim", "victim_big")
    cache.get(victim, lambda: count("victim"), tenant="victim")
    for i in range(5000):  # each spec edit a new fingerprint, counted once
        cache.get(("server", f"fp{i}", "attacker_small"), lambda: count("attacker"), "attacker")
    cache.get(victim, lambda: count("victim"), tenant="victim")
    assert counted.count("victim") == 1, "the victim's expensive count was made again"
    assert len(cache) <= cache.max_entries


# --- F15: with mTLS, one tenant's reviews hold at most one reader, within its share ----------


def test_one_tenants_slow_reviews_hold_one_reader_and_count_against_its_share() -> None:
    import threading

    from vectorschema.core.policy import Policy
    from vectorschema.core.schema import Capabilities
    from vectorschema.k8s import admission
    from vectorschema.qdrant.limits import TENANT

    release = threading.Event()
    tenants: list[str | None] = []

    class Slow:
        location = "slow"

        def capabilities(self) -> Capabilities:
            return Capabilities()

        def observe(self, name: str) -> None:
            tenants.append(TENANT.get())
            release.wait(30)  # a big collection's read
            return None

        def count_with_vector(self, name: str, vector: str, exact: bool) -> int:
            return 0

    def spec_of(ns: str, name: str) -> dict[str, Any]:
        meta = {"namespace": ns, "name": name}
        return {"metadata": meta, "spec": {"plugins": []}}

    async def reviews() -> list[admission.Answer]:
        def one(ns: str, name: str, seconds: float) -> Any:
            return admission.review(
                spec_of(ns, name),
                None,
                lambda: {},
                policy=Policy(),
                plan_seconds=seconds,
                read_uid=lambda ns, n: None,
                default_connection=lambda: cast(Any, Slow()),
                authenticated=True,
            )

        first = await one("hostile", "a", 0.2)  # times out; its read goes on
        second = await one("hostile", "b", 0.2)
        release.set()
        other = await one("victim", "c", 5)
        return [first, second, other]

    first, second, other = asyncio.run(reviews())
    assert any("did not answer within" in w for w in first.warnings)
    assert any("another review in Kubernetes namespace 'hostile'" in w for w in second.warnings)
    assert not any("another review" in w for w in other.warnings)
    assert tenants == ["hostile", "victim"]  # each read counted against its tenant's share
    deadline = time.monotonic() + 30
    while admission.in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert admission.in_flight() == 0


# --- F16: the cap check sorts a namespace's entries once, not once per resource ------------


def test_checking_every_resource_of_a_crowded_namespace_sorts_it_once() -> None:
    n, caps, ranks = 10_000, Caps(namespaces=100), Ranks()
    index = {
        "t": [
            (f"2026-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z", f"r{i}")
            for i in range(n)
        ]
    }
    refused = [H.over_cap("t", f"r{i}", index, caps, ranks) for i in range(n)]
    assert sum(r is None for r in refused) == 100 and refused[99] is None and refused[100]
    assert ranks.sorts == 1
    index["t"].append(("2026-01-02T00:00:00Z", "late"))  # one more: sorted again, once
    assert (
        H.over_cap("t", "late", index, caps, ranks)
        and H.over_cap("t", "r5", index, caps, ranks) is None
    )
    assert ranks.sorts == 2
    # one goes and another comes (same count): the DELETED event's `forget` re-sorts
    index["t"].remove(("2026-01-01T00:00:00Z", "r0"))
    index["t"].append(("2026-01-03T00:00:00Z", "later"))
    ranks.forget("t")
    assert H.over_cap("t", "r100", index, caps, ranks) is None
    assert ranks.sorts == 3
