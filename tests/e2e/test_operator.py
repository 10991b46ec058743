"""The operator core on the real control plane: the seed's contract, declaratively.

Manifests are applied with kubectl; status is read back through the API; the live
collection is read from the embedded Qdrant the operator uses.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from qdrant_client import models as qm
from tests.e2e.operator_env import (
    KubectlFn,
    apply,
    condition,
    events,
    namespace_doc,
    plugin_doc,
    reason_is,
    vns,
    wakeups,
)
from tests.seams import client_of

from vectorschema.qdrant.client import ClientGateway

E5 = "multilingual_e5_large_instruct_v1"
SIGLIP = "fashionsiglip_v1_embedding"

pytestmark = pytest.mark.usefixtures("operator")


def uid() -> str:
    return uuid.uuid4().hex[:6]


def seed_points(qdrant: ClientGateway, collection: str, count: int, **sizes: int) -> None:
    rng = random.Random(7)
    with client_of(qdrant) as client:
        for start in range(0, count, 500):
            client.upsert(
                collection,
                points=[
                    qm.PointStruct(
                        id=i,
                        vector={n: [rng.random() for _ in range(d)] for n, d in sizes.items()},
                        payload={"doc": f"doc-{i}"},
                    )
                    for i in range(start, min(start + 500, count))
                ],
            )


def test_samples_reach_ready(kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway) -> None:
    """`make run`'s samples: three plugins, one Namespace, Ready with three vectors."""
    kubectl("apply", "-f", "manifests/samples/")
    obj = wait_for(
        reason_is(kubectl, "tenant-acme", "catalog", "Ready", "True", "Reconciled"),
        timeout=60,
        message="sample Namespace Ready",
    )
    status = obj["status"]
    assert status["collection"] == "tenant-acme_catalog"
    assert status["vectors"] == [E5, SIGLIP, "splade_v1_sparse"]
    assert status["pointsCount"] == 0
    live = qdrant.observe("tenant-acme_catalog")
    assert live is not None
    assert sorted(live.names) == sorted(status["vectors"])
    assert live.metadata["vectorschema.dev/owner"] == "tenant-acme/catalog"
    table = kubectl("get", "vns", "-n", "tenant-acme").stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:5] == ["NAME", "READY", "REASON", "VECTORS", "POINTS"]
    assert row.split()[:5] == ["catalog", "True", "Reconciled", "3", "0"]
    wide = kubectl("get", "vns", "-n", "tenant-acme", "-o", "wide").stdout.splitlines()[1]
    assert "tenant-acme_catalog" in wide and E5 in wide


def test_seed_example_under_recreate(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    """The seed's own example: 1500 points, fashionsiglip added, confirm, recreated."""
    apply(
        kubectl,
        plugin_doc("e5-" + namespace, {"name": E5, "size": 1024, "distance": "Cosine"}),
        plugin_doc("siglip-" + namespace, {"name": SIGLIP, "size": 768, "distance": "Cosine"}),
    )
    text, image = "e5-" + namespace, "siglip-" + namespace
    collections = [
        {"id": "col_xxx", "plugins": [text]},
        {"id": "col_yyy", "plugins": [text, image]},
    ]
    doc = namespace_doc(
        namespace,
        "search",
        plugins=[{"name": text}],
        collections=collections,
        strategy="Recreate",
    )
    apply(kubectl, doc)
    wait_for(reason_is(kubectl, namespace, "search", "Ready", "True", "Reconciled"), 60)
    collection = f"{namespace}_search"
    seed_points(qdrant, collection, 1500, **{E5: 1024})

    doc["spec"]["plugins"].append({"name": image})
    apply(kubectl, doc)
    obj = wait_for(
        reason_is(kubectl, namespace, "search", "Ready", "False", "AwaitingConfirmation"),
        60,
        "AwaitingConfirmation",
    )
    plan = obj["status"]["plan"]
    assert plan["destructive"] is True
    assert plan["pointsAtRisk"] == 1500
    assert [a["action"] for a in plan["actions"]] == ["recreateCollection"]
    assert len(plan["fingerprint"]) == 16
    assert obj["status"]["pointsCount"] == 1500
    live = qdrant.observe(collection)
    assert live is not None and live.points_count == 1500 and live.names == [E5]
    pending = [e for e in events(kubectl, namespace, "search") if e["reason"] == "PlanPending"]
    assert pending and plan["fingerprint"] in pending[0]["message"]

    doc["spec"]["confirm"] = True
    apply(kubectl, doc)
    obj = wait_for(
        reason_is(kubectl, namespace, "search", "Ready", "True", "Reconciled"), 60, "recreated"
    )
    last = obj["status"]["lastReconfigure"]
    assert last["status"] == "reconfigured"
    assert last["previousPointsCount"] == 1500
    assert last["vectorsAdded"] == [SIGLIP]
    assert last["vectorsTotal"] == [E5, SIGLIP]
    assert last["collectionsToReprocess"] == ["col_xxx", "col_yyy"]
    assert last["pointsDeleted"] == 1500
    assert last["strategy"] == "Recreate"
    assert last["message"] == (
        "Qdrant collection reconfigured with 1 new vector(s). 1500 points were deleted. "
        "Re-trigger batches on the listed collections to re-ingest data with the new vectors."
    )
    assert "plan" not in obj["status"]
    live = qdrant.observe(collection)
    assert live is not None and live.points_count == 0
    assert sorted(live.names) == sorted([E5, SIGLIP])


def test_plugin_not_found_then_created(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    """Unknown plugin: Stalled, Qdrant untouched; the Plugin appearing re-reconciles."""
    plugin = "late-" + namespace
    apply(kubectl, namespace_doc(namespace, "late", plugins=[{"name": plugin}]))
    obj = wait_for(reason_is(kubectl, namespace, "late", "Stalled", "True", "PluginNotFound"), 60)
    assert plugin in condition(obj, "Stalled")["message"]
    assert condition(obj, "Ready")["status"] == "False"
    assert qdrant.observe(f"{namespace}_late") is None

    apply(kubectl, plugin_doc(plugin, {"name": "v", "size": 4, "distance": "Dot"}))
    wait_for(reason_is(kubectl, namespace, "late", "Ready", "True", "Reconciled"), 60)
    live = qdrant.observe(f"{namespace}_late")
    assert live is not None and live.names == ["v"]


def test_plugin_conflict_names_both(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    a, b = "a-" + namespace, "b-" + namespace
    apply(
        kubectl,
        plugin_doc(a, {"name": "shared", "size": 8, "distance": "Cosine"}),
        plugin_doc(b, {"name": "shared", "size": 16, "distance": "Cosine"}),
    )
    apply(kubectl, namespace_doc(namespace, "clash", plugins=[{"name": a}, {"name": b}]))
    obj = wait_for(reason_is(kubectl, namespace, "clash", "Stalled", "True", "PluginConflict"), 60)
    message = condition(obj, "Stalled")["message"]
    assert a in message and b in message and "shared" in message
    assert qdrant.observe(f"{namespace}_clash") is None


def test_plugin_change_reconciles_users(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    """A changed Plugin re-reconciles every Namespace listing it (found by index)."""
    plugin = "grow-" + namespace
    apply(kubectl, plugin_doc(plugin, {"name": "one", "size": 4, "distance": "Dot"}))
    for name in ("first", "second"):
        apply(kubectl, namespace_doc(namespace, name, plugins=[{"name": plugin}]))
    for name in ("first", "second"):
        wait_for(reason_is(kubectl, namespace, name, "Ready", "True", "Reconciled"), 60)
    apply(
        kubectl,
        plugin_doc(
            plugin,
            {"name": "one", "size": 4, "distance": "Dot"},
            {"name": "two", "type": "sparse"},
        ),
    )
    for name in ("first", "second"):
        wait_for(
            lambda n=name: vns(kubectl, namespace, n)["status"].get("vectors") == ["one", "two"],
            60,
            f"{name} gains the plugin's new vector",
        )
        live = qdrant.observe(f"{namespace}_{name}")
        assert live is not None and sorted(live.names) == ["one", "two"]
        assert wakeups().wakes[(namespace, name), "plugin"] >= 1  # found through the index


def test_collection_owned_elsewhere(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    vec = {"name": "v", "size": 4, "distance": "Cosine"}
    shared = f"{namespace}_shared"  # within the tenant prefix (the admin's default rule)
    apply(
        kubectl,
        namespace_doc(
            namespace, "owner", plugins=[{"name": "p", "vectors": [vec]}], collectionName=shared
        ),
    )
    wait_for(reason_is(kubectl, namespace, "owner", "Ready", "True", "Reconciled"), 60)
    other = {"name": "w", "size": 8, "distance": "Dot"}
    apply(
        kubectl,
        namespace_doc(
            namespace,
            "intruder",
            plugins=[{"name": "p", "vectors": [other]}],
            collectionName=shared,
        ),
    )
    obj = wait_for(
        reason_is(kubectl, namespace, "intruder", "Stalled", "True", "CollectionOwnedElsewhere"),
        60,
    )
    assert f"{namespace}/owner" in condition(obj, "Stalled")["message"]
    live = qdrant.observe(shared)
    assert live is not None and live.names == ["v"]


def test_resync_does_not_churn(kubectl: KubectlFn, wait_for: Any, namespace: str) -> None:
    """Several resync passes over an unchanged world write nothing (same resourceVersion)."""
    vec = {"name": "v", "size": 4, "distance": "Cosine"}
    apply(kubectl, namespace_doc(namespace, "calm", plugins=[{"name": "p", "vectors": [vec]}]))
    obj = wait_for(reason_is(kubectl, namespace, "calm", "Ready", "True", "Reconciled"), 60)
    key = (namespace, "calm")
    start = wakeups().passes.get(key, 0)
    wait_for(lambda: wakeups().passes.get(key, 0) >= start + 3, 30, "three resync passes")
    again = vns(kubectl, namespace, "calm")
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]
    assert condition(again, "Ready") == condition(obj, "Ready")


def test_describe_shows_status_and_events(
    kubectl: KubectlFn, wait_for: Any, namespace: str
) -> None:
    vec = {"name": "v", "size": 4, "distance": "Cosine"}
    apply(kubectl, namespace_doc(namespace, "told", plugins=[{"name": "p", "vectors": [vec]}]))
    wait_for(reason_is(kubectl, namespace, "told", "Ready", "True", "Reconciled"), 60)
    wait_for(
        lambda: any(e["reason"] == "CollectionCreated" for e in events(kubectl, namespace, "told")),
        30,
        "CollectionCreated event",
    )
    out = kubectl("describe", "vns", "told", "-n", namespace).stdout
    assert "Last Reconfigure" in out and "CollectionCreated" in out


def test_deleting_a_used_plugin_stalls_and_touches_nothing(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    plugin = "gone-" + namespace
    apply(kubectl, plugin_doc(plugin, {"name": "v", "size": 4, "distance": "Dot"}))
    apply(kubectl, namespace_doc(namespace, "orphan", plugins=[{"name": plugin}]))
    wait_for(reason_is(kubectl, namespace, "orphan", "Ready", "True", "Reconciled"), 60)
    kubectl("delete", "vplugin", plugin)
    obj = wait_for(reason_is(kubectl, namespace, "orphan", "Stalled", "True", "PluginNotFound"), 60)
    assert plugin in condition(obj, "Stalled")["message"]
    live = qdrant.observe(f"{namespace}_orphan")
    assert live is not None and live.names == ["v"]  # nothing removed


def test_the_running_operator_tuned_the_garbage_collector(wait_for: Any) -> None:
    """Once started, the operator froze its startup objects out of the collector's sight
    and raised the young generation's threshold (`handlers.tune_gc`, issue 19)."""
    import gc

    from vectorschema.k8s import handlers

    wait_for(
        lambda: gc.get_threshold() == handlers.GC_THRESHOLDS and gc.get_freeze_count() > 0,
        message="the operator's startup tuned the garbage collector",
    )
