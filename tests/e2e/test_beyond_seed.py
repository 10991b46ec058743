"""Beyond the seed, on the real control plane: in-place changes, plan approval that is
safe under GitOps, deletion policies, drift repair, per-namespace connections, the CLI.
"""

from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models as qm
from tests.e2e.operator_env import (
    KubectlFn,
    apply,
    condition,
    events,
    namespace_doc,
    reason_is,
    secret_doc,
    until,
    vns,
    wakeups,
)
from tests.seams import client_of

from vectorschema.cli import SEED_KEYS
from vectorschema.qdrant.client import ClientGateway

pytestmark = pytest.mark.usefixtures("operator")

CLI = str(Path(sys.executable).parent / "vectorschema")
TEXT = {"name": "text", "vectors": [{"name": "text_v1", "size": 32, "distance": "Cosine"}]}
KEYWORDS = {"name": "keywords", "vectors": [{"name": "kw_v1", "type": "sparse"}]}
IMAGE = {"name": "image", "vectors": [{"name": "image_v1", "size": 16, "distance": "Dot"}]}
COLLECTIONS = [
    {"id": "col_docs", "plugins": ["text", "keywords"]},
    {"id": "col_images", "plugins": ["image"]},
]


def ready(kubectl: KubectlFn, ns: str, name: str) -> Any:
    return reason_is(kubectl, ns, name, "Ready", "True", "Reconciled")


def awaiting(kubectl: KubectlFn, ns: str, name: str) -> Any:
    return reason_is(kubectl, ns, name, "Ready", "False", "AwaitingConfirmation")


def seed(qdrant: ClientGateway, collection: str, count: int) -> dict[int, list[float]]:
    """`count` points with a dense text vector, a sparse keyword vector and a payload."""
    rng = random.Random(11)
    texts: dict[int, list[float]] = {}
    with client_of(qdrant) as client:
        for start in range(0, count, 1000):
            batch = []
            for i in range(start, min(start + 1000, count)):
                texts[i] = [rng.uniform(-1, 1) for _ in range(32)]
                batch.append(
                    qm.PointStruct(
                        id=i,
                        vector={
                            "text_v1": texts[i],
                            "kw_v1": qm.SparseVector(indices=[i % 97, 100 + i % 13], values=[1, 2]),
                        },
                        payload={"doc": f"doc-{i}", "n": i},
                    )
                )
            client.upsert(collection, points=batch, wait=True)
    return texts


def scroll_all(qdrant: ClientGateway, collection: str) -> list[Any]:
    points: list[Any] = []
    offset = None
    with client_of(qdrant) as client:
        while True:
            page, offset = client.scroll(
                collection, limit=1000, offset=offset, with_payload=True, with_vectors=True
            )
            points.extend(page)
            if offset is None:
                return points


def make(kubectl: KubectlFn, wait_for: Any, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    doc = namespace_doc(ns, name, collections=COLLECTIONS, **spec)
    apply(kubectl, doc)
    wait_for(ready(kubectl, ns, name), 60, f"{name} Ready")
    return doc


def test_add_vector_in_place_keeps_5000_points(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    doc = make(kubectl, wait_for, namespace, "grow", plugins=[TEXT, KEYWORDS])
    collection = f"{namespace}_grow"
    texts = seed(qdrant, collection, 5000)

    doc["spec"]["plugins"].append(IMAGE)
    apply(kubectl, doc)
    obj = until(
        kubectl,
        namespace,
        "grow",
        lambda o: (
            o["status"].get("vectors") == ["text_v1", "kw_v1", "image_v1"]
            and condition(o, "Ready").get("status") == "True"
        ),
        60,
        "image_v1 added without confirmation",
    )
    last = obj["status"]["lastReconfigure"]
    assert last["status"] == "reconfigured"
    assert last["pointsDeleted"] == 0
    assert last["previousPointsCount"] == 5000
    assert last["vectorsAdded"] == ["image_v1"]
    assert last["collectionsToReprocess"] == ["col_images"]
    assert "No points were deleted" in last["message"]

    points = scroll_all(qdrant, collection)
    assert len(points) == 5000
    for p in points:
        assert p.payload == {"doc": f"doc-{p.id}", "n": p.id}
        assert p.vector["text_v1"] == pytest.approx(_normalised(texts[p.id]), rel=1e-5)
        assert p.vector["kw_v1"].indices == [p.id % 97, 100 + p.id % 13]
        assert "image_v1" not in p.vector  # new vectors start empty, to be backfilled


def _normalised(v: list[float]) -> list[float]:
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def test_removal_waits_then_drops_only_that_vector(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    doc = make(kubectl, wait_for, namespace, "shrink", plugins=[TEXT, KEYWORDS])
    collection = f"{namespace}_shrink"
    seed(qdrant, collection, 300)

    doc["spec"]["plugins"] = [TEXT]
    apply(kubectl, doc)
    obj = wait_for(awaiting(kubectl, namespace, "shrink"), 60, "removal awaits confirmation")
    plan = obj["status"]["plan"]
    assert [(a["action"], a["vector"]) for a in plan["actions"]] == [("removeVector", "kw_v1")]
    assert plan["vectorsAtRisk"] == ["kw_v1"]
    wide = kubectl("get", "vns", "shrink", "-n", namespace, "-o", "wide").stdout
    assert plan["fingerprint"] in wide.splitlines()[1]  # the PLAN column
    assert plan["pointsAtRisk"] == 300
    live = qdrant.observe(collection)
    assert live is not None and sorted(live.names) == ["kw_v1", "text_v1"]

    doc["spec"]["confirmPlan"] = plan["fingerprint"]
    apply(kubectl, doc)
    obj = wait_for(ready(kubectl, namespace, "shrink"), 60, "removal applied")
    last = obj["status"]["lastReconfigure"]
    assert last["vectorsRemoved"] == ["kw_v1"]
    assert last["pointsDeleted"] == 0
    assert last["planFingerprint"] == plan["fingerprint"]
    live = qdrant.observe(collection)
    assert live is not None and live.names == ["text_v1"] and live.points_count == 300
    points = scroll_all(qdrant, collection)
    assert all(set(p.vector) == {"text_v1"} and p.payload["n"] == p.id for p in points)


def test_stale_confirm_plan_does_nothing(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    doc = make(kubectl, wait_for, namespace, "pinned", plugins=[TEXT, KEYWORDS, IMAGE])
    collection = f"{namespace}_pinned"
    doc["spec"]["plugins"] = [TEXT, KEYWORDS]
    apply(kubectl, doc)
    first = wait_for(awaiting(kubectl, namespace, "pinned"), 60)["status"]["plan"]["fingerprint"]

    # The reviewer pinned the first plan; the PR then changed to a different destructive plan.
    doc["spec"]["confirmPlan"] = first
    doc["spec"]["confirm"] = True
    doc["spec"]["plugins"] = [TEXT]
    apply(kubectl, doc)
    obj = wait_for(awaiting(kubectl, namespace, "pinned"), 60, "new plan waits")
    assert obj["status"]["plan"]["fingerprint"] != first
    assert f"confirmPlan {first} does not match" in condition(obj, "Ready")["message"]
    live = qdrant.observe(collection)
    assert live is not None and sorted(live.names) == ["image_v1", "kw_v1", "text_v1"]


def test_annotation_approves_once(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    doc = make(kubectl, wait_for, namespace, "once", plugins=[TEXT, KEYWORDS, IMAGE])
    collection = f"{namespace}_once"
    doc["spec"]["plugins"] = [TEXT, KEYWORDS]
    apply(kubectl, doc)
    fp = wait_for(awaiting(kubectl, namespace, "once"), 60)["status"]["plan"]["fingerprint"]
    kubectl("annotate", "vns", "once", "-n", namespace, f"vectorschema.dev/confirm={fp}")
    obj = wait_for(
        lambda: (
            (o := vns(kubectl, namespace, "once"))["status"]
            .get("lastReconfigure", {})
            .get("planFingerprint")
            == fp
            and "vectorschema.dev/confirm" not in o["metadata"].get("annotations", {})
            and o
        ),
        60,
        "applied and annotation removed",
    )
    assert obj["status"]["lastReconfigure"]["vectorsRemoved"] == ["image_v1"]
    # The next destructive change is not approved by the (consumed) annotation.
    doc["spec"]["plugins"] = [TEXT]
    apply(kubectl, doc)
    wait_for(awaiting(kubectl, namespace, "once"), 60, "second change waits")
    live = qdrant.observe(collection)
    assert live is not None and sorted(live.names) == ["kw_v1", "text_v1"]


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_deletion_policy(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str, policy: str
) -> None:
    make(kubectl, wait_for, namespace, "doomed", plugins=[TEXT], deletionPolicy=policy)
    collection = f"{namespace}_doomed"
    seed_text_only(qdrant, collection, 10)
    kubectl("delete", "vns", "doomed", "-n", namespace, "--timeout=60s")
    live = qdrant.observe(collection)
    if policy == "Delete":
        assert live is None
    else:
        assert live is not None and live.points_count == 10
        assert "vectorschema.dev/owner" not in live.metadata


def test_a_retained_collection_is_adopted_only_when_asked(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    """Retain, then a new Namespace for the same collection: it waits for spec.adopt."""
    make(
        kubectl,
        wait_for,
        namespace,
        "first",
        plugins=[TEXT],
        collectionName=f"{namespace}_kept",
    )
    collection = f"{namespace}_kept"
    seed_text_only(qdrant, collection, 12)
    kubectl("delete", "vns", "first", "-n", namespace, "--timeout=60s")

    doc = namespace_doc(
        namespace,
        "second",
        plugins=[TEXT, KEYWORDS],
        collections=COLLECTIONS,
        collectionName=collection,
    )
    apply(kubectl, doc)
    obj = wait_for(
        reason_is(kubectl, namespace, "second", "Stalled", "True", "AdoptionRequired"), 60
    )
    assert "spec.adopt" in condition(obj, "Stalled")["message"]
    live = qdrant.observe(collection)
    assert live is not None and live.names == ["text_v1"]  # untouched

    doc["spec"]["adopt"] = True
    apply(kubectl, doc)
    obj = wait_for(ready(kubectl, namespace, "second"), 60, "adopted and extended")
    assert obj["status"]["lastReconfigure"]["vectorsAdded"] == ["kw_v1"]
    live = qdrant.observe(collection)
    assert live is not None and live.points_count == 12
    assert sorted(live.names) == ["kw_v1", "text_v1"]
    assert live.metadata["vectorschema.dev/owner"] == f"{namespace}/second"


def seed_text_only(qdrant: ClientGateway, collection: str, count: int) -> None:
    with client_of(qdrant) as client:
        client.upsert(
            collection,
            points=[qm.PointStruct(id=i, vector={"text_v1": [1.0] * 32}) for i in range(count)],
        )


def test_deletion_with_qdrant_unreachable_is_bounded(
    kubectl: KubectlFn, wait_for: Any, namespace: str
) -> None:
    apply(
        kubectl,
        namespace_doc(
            namespace,
            "stranded",
            plugins=[TEXT],
            deletionPolicy="Delete",
            qdrant={"url": "http://127.0.0.1:1"},
        ),
    )
    obj = wait_for(
        reason_is(kubectl, namespace, "stranded", "Reconciling", "True", "QdrantUnavailable"), 60
    )
    assert "127.0.0.1:1" in condition(obj, "Reconciling")["message"]
    kubectl("delete", "vns", "stranded", "-n", namespace, "--timeout=90s")
    warning = wait_for(
        lambda: [
            e
            for e in events(kubectl, namespace, "stranded")
            if e["reason"] == "ReleasedWithoutCleanup"
        ],
        30,
        "ReleasedWithoutCleanup event",
    )
    assert warning[0]["type"] == "Warning"
    assert f"{namespace}_stranded" in warning[0]["message"]


def test_drift_deleted_collection_is_recreated(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    make(kubectl, wait_for, namespace, "drift", plugins=[TEXT, KEYWORDS])
    collection = f"{namespace}_drift"
    qdrant.delete_collection(collection)
    live = wait_for(lambda: qdrant.observe(collection), 60, "collection recreated by resync")
    assert sorted(live.names) == ["kw_v1", "text_v1"]
    assert live.metadata["vectorschema.dev/owner"] == f"{namespace}/drift"


def test_manual_vector_removal_waits_for_confirmation(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    make(kubectl, wait_for, namespace, "tampered", plugins=[TEXT, KEYWORDS])
    collection = f"{namespace}_tampered"
    qdrant.delete_vector(collection, "kw_v1")
    obj = wait_for(awaiting(kubectl, namespace, "tampered"), 60, "drift plan awaits confirmation")
    plan = obj["status"]["plan"]
    assert [(a["action"], a["vector"]) for a in plan["actions"]] == [("addVector", "kw_v1")]
    assert "changed outside the operator" in plan["reason"]
    live = qdrant.observe(collection)
    assert live is not None and live.names == ["text_v1"]
    kubectl(
        "annotate",
        "vns",
        "tampered",
        "-n",
        namespace,
        f"vectorschema.dev/confirm={plan['fingerprint']}",
    )
    wait_for(ready(kubectl, namespace, "tampered"), 60, "drift repaired after approval")
    live = qdrant.observe(collection)
    assert live is not None and sorted(live.names) == ["kw_v1", "text_v1"]


def test_api_key_secret_is_watched_and_never_shown(
    kubectl: KubectlFn, wait_for: Any, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_value = "s3cr3t-e2e-key-" + namespace
    apply(
        kubectl,
        namespace_doc(
            namespace,
            "keyed",
            plugins=[TEXT],
            qdrant={
                "url": "http://127.0.0.1:1",
                "apiKeySecretRef": {"name": "qdrant", "key": "apiKey"},
            },
        ),
    )
    obj = wait_for(
        reason_is(kubectl, namespace, "keyed", "Reconciling", "True", "SecretNotFound"), 60
    )
    assert f"Secret {namespace}/qdrant not found" in condition(obj, "Reconciling")["message"]
    # Labelled for the operator (only such Secrets may be referenced).
    apply(kubectl, secret_doc(namespace, "qdrant", {"apiKey": secret_value.encode()}))
    obj = wait_for(
        reason_is(kubectl, namespace, "keyed", "Reconciling", "True", "QdrantUnavailable"), 60
    )
    assert wakeups().wakes[(namespace, "keyed"), "secret"] >= 1  # woken by the Secret watch
    shown = json.dumps(obj["status"]) + json.dumps(events(kubectl, namespace, "keyed"))
    assert secret_value not in shown
    assert any("127.0.0.1:1" in r.getMessage() for r in caplog.records)  # logs were captured
    assert secret_value not in caplog.text


def _cli(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=180, env=dict(os.environ), check=check
    )


def test_cli_reconfigure_prints_the_seed_response(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    doc = make(kubectl, wait_for, namespace, "seedlike", plugins=[TEXT], strategy="Recreate")
    collection = f"{namespace}_seedlike"
    seed_text_only(qdrant, collection, 25)
    wait_for(lambda: qdrant.observe(collection) is not None, 5, "collection exists")

    nothing = _cli("reconfigure", "seedlike", "-n", namespace, "--confirm")
    assert nothing.returncode == 0, nothing.stderr
    response = json.loads(nothing.stdout)
    assert tuple(response) == SEED_KEYS
    assert response["status"] == "no_changes_needed"

    doc["spec"]["plugins"].append(IMAGE)
    apply(kubectl, doc)
    wait_for(awaiting(kubectl, namespace, "seedlike"), 60)

    refused = _cli("reconfigure", "seedlike", "-n", namespace)
    assert refused.returncode == 1
    assert "--confirm" in refused.stderr
    assert "vectorschema.dev/confirm" not in vns(kubectl, namespace, "seedlike")["metadata"].get(
        "annotations", {}
    )

    done = _cli("reconfigure", "seedlike", "-n", namespace, "--confirm")
    assert done.returncode == 0, done.stderr
    response = json.loads(done.stdout)
    assert tuple(response) == SEED_KEYS
    assert response == {
        "namespace_id": f"{namespace}/seedlike",
        "status": "reconfigured",
        "previous_points_count": 25,
        "vectors_added": ["image_v1"],
        "vectors_total": ["text_v1", "image_v1"],
        "collections_to_reprocess": ["col_docs", "col_images"],
        "message": "Qdrant collection reconfigured with 1 new vector(s). 25 points were deleted. "
        "Re-trigger batches on the listed collections to re-ingest data with the new vectors.",
    }


def test_recorded_intent_is_finished_after_a_crash(
    kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway, namespace: str
) -> None:
    """The state a crash leaves right after the intent write: the operator finishes it.

    The intent (`status.operation`) is written, guarded by resourceVersion, just before
    the first destructive Qdrant call. Here it is written the same way (through /status),
    with the collection already dropped as if the crash came mid-recreate; while the spec
    still approves the plan (here its pinned confirmPlan), the operator re-creates the
    collection without asking again and reports the recorded outcome.
    """
    doc = make(kubectl, wait_for, namespace, "crashed", plugins=[TEXT], strategy="Recreate")
    collection = f"{namespace}_crashed"
    seed_text_only(qdrant, collection, 40)
    doc["spec"]["plugins"].append(IMAGE)
    apply(kubectl, doc)
    plan = wait_for(awaiting(kubectl, namespace, "crashed"), 60)["status"]["plan"]

    outcome = {
        "status": "reconfigured",
        "previousPointsCount": 40,
        "vectorsAdded": ["image_v1"],
        "vectorsTotal": ["text_v1", "image_v1"],
        "collectionsToReprocess": ["col_docs", "col_images"],
        "message": "Qdrant collection reconfigured with 1 new vector(s). 40 points were deleted. "
        "Re-trigger batches on the listed collections to re-ingest data with the new vectors.",
        "pointsDeleted": 40,
        "strategy": "Recreate",
        "planFingerprint": plan["fingerprint"],
    }
    intent = {
        "planFingerprint": plan["fingerprint"],
        "started": "2026-01-01T00:00:00Z",
        "collection": collection,
        "connection": "embedded",
        "approvedBy": "confirmPlan",
        "generation": vns(kubectl, namespace, "crashed")["metadata"]["generation"],
        "steps": [{"action": "recreateCollection", "state": "Pending"}],
        "result": outcome,
    }
    qdrant.delete_collection(collection)  # the crash came after the drop
    kubectl(
        "patch",
        "vns",
        "crashed",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"operation": intent}}),
    )
    doc["spec"]["confirmPlan"] = plan["fingerprint"]  # the approval the operation recorded
    apply(kubectl, doc)
    obj = until(
        kubectl,
        namespace,
        "crashed",
        lambda o: (
            "operation" not in o["status"]
            and o["status"].get("lastReconfigure", {}).get("planFingerprint") == plan["fingerprint"]
            and condition(o, "Ready").get("status") == "True"
        ),
        60,
        "the interrupted plan finished",
    )
    assert obj["status"]["lastReconfigure"]["previousPointsCount"] == 40
    live = qdrant.observe(collection)
    assert live is not None and sorted(live.names) == ["image_v1", "text_v1"]
    assert live.metadata["vectorschema.dev/owner"] == f"{namespace}/crashed"
    wait_for(
        lambda: [
            e for e in events(kubectl, namespace, "crashed") if e["reason"] == "OperationResumed"
        ],
        30,
        "OperationResumed event",
    )
