"""Issue 8: a hostile tenant against a victim tenant, on the real control plane.

Two Kubernetes namespaces (`victim-*`, `attacker-*`), one embedded Qdrant, the session
operator with its admin policy (operator_env.py): the URL allowlist holds a closed port
and a few reserved loopback ports, Secrets need the label `SECRET_LABEL`, collection names
must carry the tenant's prefix. One test per numbered scenario of the issue:

1. a leftover status.operation never turns off the ownership check;
2. a withdrawn approval halts a recorded operation;
3. a Secret never reaches a URL the admin did not allow (loopback listener records
   everything it receives), nor is an unlabelled Secret ever sent;
4. the API key never leaks through errors (a key with a newline, sent to a listener the
   admin allowed; a server echoing the key back), in status, Events and logs;
5. collectionName and adopt stay inside the tenant (squatting, retained data, owner UID);
6. approvals are spent once (a recurring plan needs a new approval);
7. an interrupted multi-step plan resumes only its remaining steps, and status tells the
   truth step by step;
8. input that passes the CRD cannot wedge the operator, and deletion stays bounded;
9. one pass per resource at a time: a second pass waits for the one in flight, and the
   finaliser waits for it too (nothing is written after release).

Issue 17 (tenancy, round two), in the sections after those:

- status is not an approval: a forged `status.operation` writes nothing, clearing
  `status.appliedPlans` does not re-arm a spent `confirmPlan`, and an operation is
  abandoned with an annotation (no right on status needed).

States that only an outage or a crash can produce (an operation recorded, a collection
half-changed) are produced by writing what the operator writes before its first step
(its record on the collection, `record_on_collection`, and `status.operation` through the
status subresource) and changing Qdrant directly.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models as qm
from tests.e2e.operator_env import (
    OTHER_INSTALLATION,
    SECRET_LABEL,
    KubectlFn,
    Listener,
    Received,
    apply,
    condition,
    events,
    free_loopback_port,
    locks,
    namespace_doc,
    secret_doc,
    until,
    vns,
    wakeups,
)
from tests.seams import client_of

from vectorschema.api import NamespaceSpec
from vectorschema.controller.passes import run_pass
from vectorschema.core.operation import Intent, intent_metadata
from vectorschema.core.planning import fingerprint, resolve_desired
from vectorschema.core.policy import Policy
from vectorschema.core.schema import VectorDef
from vectorschema.k8s import kube
from vectorschema.k8s.connection import connection_id, connectors
from vectorschema.qdrant.client import ClientGateway

pytestmark = pytest.mark.usefixtures("operator")

TEXT = {"name": "text", "vectors": [{"name": "text_v1", "size": 8, "distance": "Cosine"}]}
KEYWORDS = {"name": "keywords", "vectors": [{"name": "kw_v1", "type": "sparse"}]}
IMAGE = {"name": "image", "vectors": [{"name": "image_v1", "size": 4, "distance": "Dot"}]}
IMAGE_V2 = {"name": "image", "vectors": [{"name": "image_v1", "size": 6, "distance": "Dot"}]}
OWNER = "vectorschema.dev/owner"
OWNER_UID = "vectorschema.dev/owner-uid"
RETAINED_BY = "vectorschema.dev/retained-by"
CONFIRM = "vectorschema.dev/confirm"
SECRET_LABEL_KEY = SECRET_LABEL[0]


# --- fixtures and helpers ---------------------------------------------------------------


def _tenant(kubectl: KubectlFn, prefix: str) -> Iterator[str]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture
def victim(kubectl: KubectlFn) -> Iterator[str]:
    yield from _tenant(kubectl, "victim")


@pytest.fixture
def attacker(kubectl: KubectlFn) -> Iterator[str]:
    yield from _tenant(kubectl, "attacker")


def settled(kubectl: KubectlFn, ns: str, name: str, timeout: float = 60) -> dict[str, Any]:
    """The object once the operator has reported on its current generation."""
    return until(
        kubectl,
        ns,
        name,
        lambda o: (
            o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
            and bool(condition(o, "Ready"))
        ),
        timeout,
        f"{ns}/{name} to be reconciled",
    )


def reason_of(obj: dict[str, Any]) -> tuple[str, str]:
    """(Ready reason, the message of whichever condition is True, else Ready's)."""
    ready = condition(obj, "Ready")
    for type_ in ("Stalled", "Reconciling", "Ready"):
        c = condition(obj, type_)
        if c.get("status") == "True":
            return ready.get("reason", ""), c.get("message", "")
    return ready.get("reason", ""), ready.get("message", "")


def stalled(kubectl: KubectlFn, ns: str, name: str, reason: str) -> dict[str, Any]:
    """Wait for the current generation to be reported, then require Stalled/`reason`."""
    obj = settled(kubectl, ns, name)
    got = reason_of(obj)
    assert condition(obj, "Stalled").get("status") == "True" and got[0] == reason, (
        f"expected Stalled/{reason}, got {got}: " + json.dumps(obj.get("status"), indent=1)
    )
    return obj


def ready(kubectl: KubectlFn, ns: str, name: str, timeout: float = 60) -> dict[str, Any]:
    return until(
        kubectl,
        ns,
        name,
        lambda o: (
            o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
            and condition(o, "Ready").get("status") == "True"
        ),
        timeout,
        f"{ns}/{name} Ready",
    )


def awaiting(kubectl: KubectlFn, ns: str, name: str) -> dict[str, Any]:
    return until(
        kubectl,
        ns,
        name,
        lambda o: (
            o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
            and condition(o, "Ready").get("reason") == "AwaitingConfirmation"
        ),
        60,
        f"{ns}/{name} AwaitingConfirmation",
    )


def seed(qdrant: ClientGateway, collection: str, count: int, **vectors: Any) -> None:
    """`count` points; each keyword argument is a vector name -> a value or a factory."""
    with client_of(qdrant) as client:
        client.upsert(
            collection,
            points=[
                qm.PointStruct(
                    id=i,
                    vector={n: (v(i) if callable(v) else v) for n, v in vectors.items()},
                    payload={"n": i},
                )
                for i in range(count)
            ],
            wait=True,
        )


def text_only(qdrant: ClientGateway, collection: str, count: int) -> None:
    seed(qdrant, collection, count, text_v1=[1.0] * 8)


def points(qdrant: ClientGateway, collection: str) -> int:
    live = qdrant.observe(collection)
    assert live is not None, f"collection {collection} is gone"
    return live.points_count


def patch_status(kubectl: KubectlFn, ns: str, name: str, status: dict[str, Any]) -> None:
    kubectl(
        "patch",
        "vns",
        name,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def operation(
    fp: str,
    collection: str,
    approved_by: str,
    generation: int,
    steps: list[tuple[str, str | None, str]],
    result: dict[str, Any],
) -> dict[str, Any]:
    """A `status.operation` record as the operator writes it before a destructive step.

    Carries both the pinned record (collection, connection, approvedBy, generation,
    steps) and the older `actions` list; the API server keeps what the CRD declares.
    """
    return {
        "planFingerprint": fp,
        "started": "2026-01-01T00:00:00Z",
        "collection": collection,
        "connection": "embedded",
        "approvedBy": approved_by,
        "generation": generation,
        "steps": [{"action": a, **({"vector": v} if v else {}), "state": s} for a, v, s in steps],
        "actions": [
            {"action": a, **({"vector": v} if v else {}), "destructive": a != "addVector"}
            for a, v, _ in steps
        ],
        "result": result,
    }


def record_on_collection(
    kubectl: KubectlFn,
    qdrant: ClientGateway,
    ns: str,
    name: str,
    fp: str,
    approved_by: str,
    steps: list[tuple[str, str | None, str]],
) -> None:
    """The operator's own record of an approved operation, on the collection (where no
    tenant writes), as a pass writes it before its first step. With `status.operation`
    (see `operation`) it stands for a crash or an outage right after that write; status
    alone is not an approval (issue 17)."""
    obj = vns(kubectl, ns, name)
    collection = obj["status"]["collection"]
    spec = NamespaceSpec.model_validate(obj["spec"])
    desired = resolve_desired(spec, {})  # the tests' plugins are all inline
    intent = Intent(
        uid=obj["metadata"]["uid"],
        plan=fp,
        desired=fingerprint(collection, desired, None, spec.strategy, qdrant.capabilities()),
        approved_by=approved_by,
        generation=obj["metadata"]["generation"],
        steps=tuple((a, v) for a, v, _ in steps),
        connection="embedded",
        started="2026-01-01T00:00:00Z",
    )
    qdrant.set_metadata(collection, intent_metadata(intent))


def outcome(fp: str, **fields: Any) -> dict[str, Any]:
    base = {
        "status": "reconfigured",
        "previousPointsCount": 0,
        "vectorsAdded": [],
        "vectorsTotal": [],
        "collectionsToReprocess": [],
        "message": "recorded before the first step",
        "planFingerprint": fp,
    }
    base.update(fields)
    return base


def plan_comes_back(
    kubectl: KubectlFn,
    qdrant: ClientGateway,
    ns: str,
    name: str,
    kw_def: VectorDef,
    applied_at: str,
) -> dict[str, Any]:
    """Someone with Qdrant access re-adds kw_v1 to `ns`_`name` and fills it: the plan
    applied at `applied_at` (same fingerprint) comes back. The object once it waits again,
    or once it ran again."""
    collection = f"{ns}_{name}"
    qdrant.create_vector(collection, kw_def)
    seed(
        qdrant,
        collection,
        20,
        text_v1=[1.0] * 8,
        kw_v1=qm.SparseVector(indices=[3], values=[1.0]),
    )
    return until(
        kubectl,
        ns,
        name,
        lambda o: (
            condition(o, "Ready").get("reason") == "AwaitingConfirmation"
            or o["status"]["lastReconfigure"]["time"] != applied_at
        ),
        60,
        "the recurring plan to wait (or run)",
    )


def everything_shown(kubectl: KubectlFn, ns: str, name: str) -> str:
    """Status and Events of a Namespace resource, as text (to grep for a secret)."""
    shown = [json.dumps(events(kubectl, ns, name))]
    got = kubectl("get", "vns", name, "-n", ns, "-o", "json", check=False)
    if got.returncode == 0:
        shown.append(json.dumps(json.loads(got.stdout).get("status")))
    return "\n".join(shown)


# --- 1. a leftover operation never turns off the ownership check ---------------------------


def test_leftover_operation_never_bypasses_ownership(
    kubectl: KubectlFn, qdrant: ClientGateway, victim: str, attacker: str
) -> None:
    # The victim's collection, 25 points; and a collection of another resource in the
    # attacker's own namespace (so the name rule alone cannot be what protects it).
    apply(kubectl, namespace_doc(victim, "catalog", plugins=[TEXT]))
    ready(kubectl, victim, "catalog")
    theirs = f"{victim}_catalog"
    text_only(qdrant, theirs, 25)
    shared = f"{attacker}_shared"
    apply(kubectl, namespace_doc(attacker, "keeper", plugins=[TEXT], collectionName=shared))
    ready(kubectl, attacker, "keeper")
    text_only(qdrant, shared, 25)

    # The attacker's own resource, left with a recorded operation (as a step failing on an
    # outage leaves it: the tenant can force that with a server that answers 503).
    apply(kubectl, namespace_doc(attacker, "evil", plugins=[IMAGE]))
    obj = ready(kubectl, attacker, "evil")
    fp = "0123456789abcdef"
    patch_status(
        kubectl,
        attacker,
        "evil",
        {
            "operation": operation(
                fp,
                f"{attacker}_evil",
                "confirm",
                obj["metadata"]["generation"],
                [("recreateCollection", None, "Pending")],
                outcome(fp),
            )
        },
    )

    # Aim at the victim's collection: drop-and-recreate, approved.
    hostile = namespace_doc(
        attacker, "evil", plugins=[IMAGE], strategy="Recreate", confirm=True, collectionName=theirs
    )
    apply(kubectl, hostile)
    obj = stalled(kubectl, attacker, "evil", "CollectionNameNotAllowed")
    assert "spec.collectionName" in reason_of(obj)[1]
    live = qdrant.observe(theirs)
    assert live is not None and live.points_count == 25 and live.names == ["text_v1"]
    assert live.metadata[OWNER] == f"{victim}/catalog"

    # Inside its own prefix, a collection another resource owns: refused all the same.
    hostile["spec"]["collectionName"] = shared
    apply(kubectl, hostile)
    stalled(kubectl, attacker, "evil", "CollectionOwnedElsewhere")
    live = qdrant.observe(shared)
    assert live is not None and live.points_count == 25 and live.names == ["text_v1"]
    assert live.metadata[OWNER] == f"{attacker}/keeper"


# --- 2. a withdrawn approval halts a recorded operation -----------------------------------


def test_withdrawn_approval_halts_the_recorded_operation(
    kubectl: KubectlFn, qdrant: ClientGateway, victim: str
) -> None:
    obj = shrinking(kubectl, qdrant, victim, "shrink")
    doc = namespace_doc(victim, "shrink", plugins=[TEXT])
    collection = f"{victim}_shrink"
    fp = obj["status"]["plan"]["fingerprint"]

    # confirm: true was set, the intent recorded, and the first step hit an outage; the
    # user then withdrew the approval (confirm is false in the spec).
    record_on_collection(
        kubectl, qdrant, victim, "shrink", fp, "confirm", [("removeVector", "kw_v1", "Pending")]
    )
    patch_status(
        kubectl,
        victim,
        "shrink",
        {
            "operation": operation(
                fp,
                collection,
                "confirm",
                obj["metadata"]["generation"],
                [("removeVector", "kw_v1", "Pending")],
                outcome(fp, vectorsRemoved=["kw_v1"], vectorsTotal=["text_v1"]),
            )
        },
    )
    obj = until(
        kubectl,
        victim,
        "shrink",
        lambda o: (
            condition(o, "Stalled").get("reason") == "OperationHalted"
            or "operation" not in o.get("status", {})
        ),
        60,
        "the recorded operation to be halted (or run)",
    )
    live = qdrant.observe(collection)
    assert live is not None and sorted(live.names) == ["kw_v1", "text_v1"], (
        "the withdrawn approval was ignored: kw_v1 was removed"
    )
    assert condition(obj, "Stalled").get("status") == "True", obj["status"]
    message = condition(obj, "Stalled")["message"]
    assert "removeVector kw_v1" in message and fp in message
    assert obj["status"]["operation"]["planFingerprint"] == fp
    assert points(qdrant, collection) == 30

    # Approving again lets it finish; the report is the recorded one.
    doc["spec"]["confirm"] = True
    apply(kubectl, doc)
    obj = until(
        kubectl,
        victim,
        "shrink",
        lambda o: "operation" not in o["status"] and condition(o, "Ready").get("status") == "True",
        60,
        "the operation to finish once approved again",
    )
    assert obj["status"]["lastReconfigure"]["vectorsRemoved"] == ["kw_v1"]
    live = qdrant.observe(collection)
    assert live is not None and live.names == ["text_v1"]


# --- 3. a Secret never reaches a URL the admin did not allow --------------------------------


def test_secret_never_reaches_a_url_the_admin_did_not_allow(
    kubectl: KubectlFn, allowed_ports: list[int], attacker: str
) -> None:
    token = f"sa-token-{uuid.uuid4().hex}"
    # A Secret the tenant may not be able to read itself, without the operator's label.
    apply(kubectl, secret_doc(attacker, "app-token", {"token": token.encode()}, labelled=False))
    ref = {"name": "app-token", "key": "token"}

    with Listener(free_loopback_port()) as outside, Listener(allowed_ports[0]) as allowed:
        # Any URL: refused before any connection (no exfiltration, no SSRF).
        apply(
            kubectl,
            namespace_doc(
                attacker,
                "exfil",
                plugins=[TEXT],
                qdrant={"url": outside.url, "apiKeySecretRef": ref},
            ),
        )
        obj = stalled(kubectl, attacker, "exfil", "QdrantUrlNotAllowed")
        assert "spec.qdrant.url" in reason_of(obj)[1]

        # An allowed URL, but a Secret without the label: not read, not sent.
        apply(
            kubectl,
            namespace_doc(
                attacker,
                "exfil",
                plugins=[TEXT],
                qdrant={"url": allowed.url, "apiKeySecretRef": ref},
            ),
        )
        obj = stalled(kubectl, attacker, "exfil", "SecretNotAllowed")
        assert "spec.qdrant.apiKeySecretRef" in reason_of(obj)[1]

        # Without a Secret, the URL alone reaches nothing outside the allowlist either.
        apply(
            kubectl,
            namespace_doc(attacker, "ssrf", plugins=[TEXT], qdrant={"url": outside.url + "/admin"}),
        )
        stalled(kubectl, attacker, "ssrf", "QdrantUrlNotAllowed")

        assert outside.received == [], [r.text() for r in outside.received]
        assert token not in allowed.everything()
        assert all(k.lower() != "api-key" for r in allowed.received for k, _ in r.headers)
        assert token not in everything_shown(kubectl, attacker, "exfil")


# --- 4. the API key never leaks through errors ----------------------------------------------


def test_api_key_never_leaks_through_errors(
    kubectl: KubectlFn,
    allowed_ports: list[int],
    attacker: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_part = f"k3y-{uuid.uuid4().hex}"
    bad_key = f"{secret_part}\nX-Injected: {secret_part}"
    echoed = f"echo-{uuid.uuid4().hex}"

    def echo(received: Received) -> tuple[int, dict[str, Any]]:
        key = dict((k.lower(), v) for k, v in received.headers).get("api-key", "")
        return 400, {"status": {"error": f"Wrong input: bad api-key {key!r} for this server"}}

    with Listener(allowed_ports[1]) as server, Listener(allowed_ports[2], respond=echo) as echoer:
        apply(
            kubectl,
            secret_doc(attacker, "newline", {"apiKey": bad_key.encode()}),
            secret_doc(attacker, "echoed", {"apiKey": echoed.encode()}),
            namespace_doc(
                attacker,
                "leaky",
                plugins=[TEXT],
                deletionPolicy="Delete",
                qdrant={
                    "url": server.url,
                    "apiKeySecretRef": {"name": "newline", "key": "apiKey"},
                },
            ),
            namespace_doc(
                attacker,
                "echo",
                plugins=[TEXT],
                deletionPolicy="Delete",
                qdrant={
                    "url": echoer.url,
                    "apiKeySecretRef": {"name": "echoed", "key": "apiKey"},
                },
            ),
        )
        obj = stalled(kubectl, attacker, "leaky", "SecretInvalid")
        assert "spec.qdrant.apiKeySecretRef.key" in reason_of(obj)[1]
        # The echoing server received the (valid) key: it is allowed. Its answer is not shown.
        until(
            kubectl,
            attacker,
            "echo",
            lambda o: (
                condition(o, "Stalled").get("status") == "True"
                or condition(o, "Reconciling").get("status") == "True"
            ),
            60,
            "echo to report the server's refusal",
        )
        assert any(echoed in r.text() for r in echoer.received)

        kubectl("delete", "vns", "leaky", "echo", "-n", attacker, "--timeout=90s")
        shown = everything_shown(kubectl, attacker, "leaky") + everything_shown(
            kubectl, attacker, "echo"
        )
        for value in (secret_part, echoed):
            assert value not in shown
            assert value not in caplog.text
            assert value not in server.everything()
        assert caplog.records, "the operator's logs were captured"


# --- 5. collectionName and adopt stay inside the tenant ---------------------------------------


def test_collection_names_and_adoption_stay_inside_the_tenant(
    kubectl: KubectlFn,
    qdrant: ClientGateway,
    victim: str,
    attacker: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Squatting: the attacker names the victim's future collection first.
    theirs = f"{victim}_catalog"
    apply(kubectl, namespace_doc(attacker, "squat", plugins=[TEXT], collectionName=theirs))
    obj = stalled(kubectl, attacker, "squat", "CollectionNameNotAllowed")
    assert "spec.collectionName" in reason_of(obj)[1]
    assert qdrant.observe(theirs) is None
    apply(kubectl, namespace_doc(victim, "catalog", plugins=[TEXT]))
    ready(kubectl, victim, "catalog")
    victim_uid = vns(kubectl, victim, "catalog")["metadata"]["uid"]
    live = qdrant.observe(theirs)
    assert live is not None and live.metadata[OWNER] == f"{victim}/catalog"
    assert live.metadata[OWNER_UID] == victim_uid

    # The stamped owner UID is checked: the stamp of an earlier resource of the same name
    # (a release that never ran) is not this resource's.
    qdrant.set_metadata(theirs, {OWNER_UID: "uid-of-an-earlier-catalog"})
    text_only(qdrant, theirs, 5)
    apply(kubectl, namespace_doc(victim, "catalog", plugins=[TEXT, IMAGE]))
    obj = stalled(kubectl, victim, "catalog", "AdoptionRequired")
    assert "spec.adopt" in reason_of(obj)[1]
    live = qdrant.observe(theirs)
    assert live is not None and live.names == ["text_v1"]
    apply(kubectl, namespace_doc(victim, "catalog", plugins=[TEXT, IMAGE], adopt=True))
    ready(kubectl, victim, "catalog")
    live = qdrant.observe(theirs)
    assert live is not None and sorted(live.names) == ["image_v1", "text_v1"]
    assert live.metadata[OWNER_UID] == victim_uid and live.points_count == 5

    # Retained data, with an admin who allows any collection name: another namespace can
    # neither adopt it nor drop it through its own Delete policy.
    monkeypatch.setenv("VECTORSCHEMA_COLLECTION_NAMES", "Any")
    kubectl("delete", "vns", "catalog", "-n", victim, "--timeout=60s")
    live = qdrant.observe(theirs)
    assert live is not None and live.points_count == 5
    assert OWNER not in live.metadata
    assert live.metadata.get(RETAINED_BY) == f"{victim}/catalog"
    apply(
        kubectl,
        namespace_doc(
            attacker,
            "grab",
            plugins=[TEXT, IMAGE],
            collectionName=theirs,
            adopt=True,
            deletionPolicy="Delete",
        ),
    )
    obj = stalled(kubectl, attacker, "grab", "CollectionRetainedElsewhere")
    assert "spec.collectionName" in reason_of(obj)[1]
    kubectl("delete", "vns", "grab", "-n", attacker, "--timeout=60s")
    live = qdrant.observe(theirs)
    assert live is not None and live.points_count == 5
    assert live.metadata.get(RETAINED_BY) == f"{victim}/catalog"

    # The same namespace may take it back, when it asks to.
    apply(
        kubectl,
        namespace_doc(victim, "again", plugins=[TEXT, IMAGE], collectionName=theirs, adopt=True),
    )
    ready(kubectl, victim, "again")
    live = qdrant.observe(theirs)
    assert live is not None and live.points_count == 5
    assert live.metadata[OWNER] == f"{victim}/again" and RETAINED_BY not in live.metadata


# --- 6. approvals are spent once --------------------------------------------------------------


def test_approvals_are_spent_once(kubectl: KubectlFn, qdrant: ClientGateway, victim: str) -> None:
    doc = namespace_doc(victim, "replay", plugins=[TEXT, KEYWORDS])
    apply(kubectl, doc)
    ready(kubectl, victim, "replay")
    collection = f"{victim}_replay"
    kw = qdrant.observe(collection)
    assert kw is not None
    kw_def = kw.by_name["kw_v1"]
    doc["spec"]["plugins"] = [TEXT]
    apply(kubectl, doc)
    fp = awaiting(kubectl, victim, "replay")["status"]["plan"]["fingerprint"]
    doc["spec"]["confirmPlan"] = fp
    apply(kubectl, doc)
    obj = until(
        kubectl,
        victim,
        "replay",
        lambda o: o["status"].get("lastReconfigure", {}).get("planFingerprint") == fp,
        60,
        "the approved removal",
    )
    applied_at = obj["status"]["lastReconfigure"]["time"]

    # Someone re-adds kw_v1 by hand and fills it: the same plan (same fingerprint) again.
    obj = plan_comes_back(kubectl, qdrant, victim, "replay", kw_def, applied_at)
    live = qdrant.observe(collection)
    assert live is not None and sorted(live.names) == ["kw_v1", "text_v1"], (
        "the spent confirmPlan approved the same plan again: kw_v1, filled by hand, was deleted"
    )
    assert obj["status"]["plan"]["fingerprint"] == fp  # the very same plan came back
    assert fp in obj["status"]["appliedPlans"], obj["status"]
    message = condition(obj, "Ready")["message"]
    assert "spent" in message and CONFIRM in message

    # A fresh act approves it again: the annotation, consumed before acting.
    kubectl("annotate", "vns", "replay", "-n", victim, f"{CONFIRM}={fp}")
    obj = until(
        kubectl,
        victim,
        "replay",
        lambda o: (
            condition(o, "Ready").get("status") == "True"
            and CONFIRM not in o["metadata"].get("annotations", {})
            and o["status"].get("vectors") == ["text_v1"]
        ),
        60,
        "the re-approved removal",
    )
    assert obj["status"]["appliedPlans"].count(fp) == 1


# --- 7. an interrupted multi-step plan tells the truth --------------------------------------


def test_interrupted_multi_step_plan_resumes_and_reports_the_truth(
    kubectl: KubectlFn, qdrant: ClientGateway, victim: str
) -> None:
    doc = namespace_doc(victim, "multi", plugins=[TEXT, IMAGE, KEYWORDS])
    apply(kubectl, doc)
    ready(kubectl, victim, "multi")
    collection = f"{victim}_multi"
    seed(qdrant, collection, 12, text_v1=[1.0] * 8, image_v1=[1.0] * 4)

    # Remove text_v1 and replace image_v1: two destructive steps.
    doc["spec"]["plugins"] = [IMAGE_V2, KEYWORDS]
    apply(kubectl, doc)
    obj = awaiting(kubectl, victim, "multi")
    plan = obj["status"]["plan"]
    fp = plan["fingerprint"]
    steps = [(a["action"], a.get("vector")) for a in plan["actions"]]
    assert steps == [("removeVector", "text_v1"), ("replaceVector", "image_v1")], steps

    # It was approved by confirmPlan and crashed right after its first step.
    record_on_collection(
        kubectl,
        qdrant,
        victim,
        "multi",
        fp,
        "confirmPlan",
        [("removeVector", "text_v1", "Done"), ("replaceVector", "image_v1", "Pending")],
    )
    qdrant.delete_vector(collection, "text_v1")
    patch_status(
        kubectl,
        victim,
        "multi",
        {
            "operation": operation(
                fp,
                collection,
                "confirmPlan",
                obj["metadata"]["generation"],
                [("removeVector", "text_v1", "Done"), ("replaceVector", "image_v1", "Pending")],
                outcome(
                    fp,
                    previousPointsCount=12,
                    vectorsRemoved=["text_v1"],
                    vectorsReplaced=["image_v1"],
                    vectorsTotal=["image_v1", "kw_v1"],
                ),
            )
        },
    )
    # The approval is not in the spec (yet): halted, and status says what is done.
    obj = until(
        kubectl,
        victim,
        "multi",
        lambda o: (
            condition(o, "Stalled").get("reason") == "OperationHalted"
            or (
                condition(o, "Ready").get("reason") == "AwaitingConfirmation"
                and o["status"].get("plan", {}).get("fingerprint") != fp
            )
        ),
        60,
        "the interrupted operation to be reported",
    )
    message = condition(obj, "Stalled").get("message", "")
    assert condition(obj, "Stalled").get("reason") == "OperationHalted", obj["status"]
    assert "done: removeVector text_v1" in message, message
    assert "remaining: replaceVector image_v1" in message, message
    steps_state = [(s["action"], s["state"]) for s in obj["status"]["operation"]["steps"]]
    assert steps_state == [("removeVector", "Done"), ("replaceVector", "Pending")]

    # The pinned approval arrives: only the remaining step runs; the report has both.
    doc["spec"]["confirmPlan"] = fp
    apply(kubectl, doc)
    obj = ready(kubectl, victim, "multi")
    last = obj["status"]["lastReconfigure"]
    assert last["planFingerprint"] == fp
    assert last["vectorsRemoved"] == ["text_v1"] and last["vectorsReplaced"] == ["image_v1"]
    assert "operation" not in obj["status"]
    live = qdrant.observe(collection)
    assert live is not None and sorted(live.names) == ["image_v1", "kw_v1"]
    assert live.by_name["image_v1"].size == 6


# --- 8. input that passes the CRD cannot wedge the operator -------------------------------


def test_bad_connection_input_is_a_status_and_deletion_is_bounded(
    kubectl: KubectlFn, allowed_ports: list[int], attacker: str
) -> None:
    # Refused by the API server (CEL isURL()).
    for url in ("https://a b", "http://[::1"):
        refused = kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                namespace_doc(attacker, "badurl", plugins=[TEXT], qdrant={"url": url})
            ),
            check=False,
        )
        assert refused.returncode != 0, f"{url!r} was accepted"
        assert "spec.qdrant.url" in refused.stderr, refused.stderr

    allowed = f"http://127.0.0.1:{allowed_ports[3]}"
    apply(
        kubectl,
        secret_doc(attacker, "binary", {"apiKey": b"\xff\xfe\x00key"}),
        secret_doc(attacker, "unicode", {"apiKey": "ключ-доступа".encode()}),
    )
    cases = {
        "port": ({"url": "http://127.0.0.1:99999"}, "InvalidConnection", "spec.qdrant.url"),
        "idn": ({"url": "http://bücher.example:6333"}, "InvalidConnection", "spec.qdrant.url"),
        "binary": (
            {"url": allowed, "apiKeySecretRef": {"name": "binary", "key": "apiKey"}},
            "SecretInvalid",
            "spec.qdrant.apiKeySecretRef.key",
        ),
        "unicode": (
            {"url": allowed, "apiKeySecretRef": {"name": "unicode", "key": "apiKey"}},
            "SecretInvalid",
            "spec.qdrant.apiKeySecretRef.key",
        ),
    }
    for name, (conn, _, _) in cases.items():
        apply(
            kubectl,
            namespace_doc(attacker, name, plugins=[TEXT], deletionPolicy="Delete", qdrant=conn),
        )
    for name, (_, reason, field) in cases.items():
        obj = stalled(kubectl, attacker, name, reason)
        assert field in reason_of(obj)[1], reason_of(obj)
        assert "ключ" not in reason_of(obj)[1]

    # Deleting them is bounded: the finalizer comes off.
    started = time.monotonic()
    kubectl("delete", "vns", *cases, "-n", attacker, "--timeout=90s")
    assert time.monotonic() - started < 90


# --- 9. one pass per resource at a time -----------------------------------------------------


class Pause:
    """Hold the operator's first call of `method` on `collection` until released.

    The hook sits on the shared gateway instance the operator uses (the embedded Qdrant),
    records every write to that collection in order, and lets later calls through.
    """

    WRITES = ("create_collection", "delete_collection", "create_vector", "delete_vector")

    def __init__(self, qdrant: ClientGateway, collection: str, method: str) -> None:
        self.qdrant, self.collection, self.method = qdrant, collection, method
        self.reached, self.go = threading.Event(), threading.Event()
        self.writes: list[str] = []
        self._paused = False
        self._lock = threading.Lock()

    def _wrap(self, name: str) -> Callable[..., Any]:
        original = getattr(self.qdrant, name)

        def hooked(collection: str, *args: Any, **kwargs: Any) -> Any:
            if collection == self.collection:
                with self._lock:
                    first = name == self.method and not self._paused
                    self._paused = self._paused or first
                if first:
                    self.reached.set()
                    self.go.wait(90)
                result = original(collection, *args, **kwargs)
                self.writes.append(name)
                return result
            return original(collection, *args, **kwargs)

        return hooked

    def __enter__(self) -> Pause:
        for name in (*self.WRITES, "set_metadata"):
            setattr(self.qdrant, name, self._wrap(name))
        return self

    def __exit__(self, *_: object) -> None:
        self.go.set()
        for name in (*self.WRITES, "set_metadata"):
            self.qdrant.__dict__.pop(name, None)


def test_a_second_pass_waits_for_the_pass_in_flight(
    kubectl: KubectlFn, qdrant: ClientGateway, victim: str
) -> None:
    """Two passes of one resource (a task and a thread, as two replicas in a handover):
    while one is in the middle of a recorded recreate, the other does not run it again."""
    doc = namespace_doc(victim, "handover", plugins=[TEXT], strategy="Recreate")
    apply(kubectl, doc)
    ready(kubectl, victim, "handover")
    collection = f"{victim}_handover"
    text_only(qdrant, collection, 10)
    doc["spec"]["plugins"] = [TEXT, IMAGE]
    apply(kubectl, doc)
    fp = awaiting(kubectl, victim, "handover")["status"]["plan"]["fingerprint"]

    with Pause(qdrant, collection, "delete_collection") as pause:
        doc["spec"]["confirmPlan"] = fp
        apply(kubectl, doc)
        assert pause.reached.wait(60), "the operator never started the recreate"

        # The operator's pass is now inside the recreate. A second pass for the same
        # resource, on another thread:
        def second_pass() -> None:
            run_pass(
                kube.Namespaces(),
                victim,
                "handover",
                {},
                connectors(Policy.from_env(os.environ)),
                locks=locks(),
                connection_of=connection_id,
            )

        second = threading.Thread(target=second_pass, daemon=True)
        second.start()
        second.join(timeout=10)
        ran_beside = not second.is_alive()
        if ran_beside:
            # It finished the recreate itself; data arrives in the new collection...
            seed(qdrant, collection, 5, text_v1=[1.0] * 8, image_v1=[1.0] * 4)
        pause.go.set()
        second.join(timeout=60)
        assert not second.is_alive()
        ready(kubectl, victim, "handover")
        if ran_beside:
            # ...and the first pass, resumed, drops it with a second recreate.
            assert points(qdrant, collection) == 5, "the recorded recreate ran twice"
        assert not ran_beside, "a second pass ran while the first was in flight"
        assert pause.writes.count("delete_collection") == 1, pause.writes


def test_release_waits_for_the_pass_in_flight_and_nothing_is_written_after(
    kubectl: KubectlFn, qdrant: ClientGateway, victim: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    doc = namespace_doc(victim, "late", plugins=[TEXT])
    apply(kubectl, doc)
    ready(kubectl, victim, "late")
    collection = f"{victim}_late"

    def gone() -> bool:
        got = kubectl("get", "vns", "late", "-n", victim, "--ignore-not-found", "-o", "name")
        return not got.stdout.strip()

    with Pause(qdrant, collection, "create_vector") as pause:
        doc["spec"]["plugins"] = [TEXT, IMAGE]
        apply(kubectl, doc)
        assert pause.reached.wait(60), "the operator never started adding image_v1"
        kubectl("delete", "vns", "late", "-n", victim, "--wait=false")
        deadline = time.monotonic() + 60
        while not gone() and "waits for the pass in flight" not in caplog.text:
            assert time.monotonic() < deadline, "the deletion neither waited nor finished"
            time.sleep(0.2)
        released_early = gone()
        pause.go.set()
        until_gone = time.monotonic() + 60
        while not gone():
            assert time.monotonic() < until_gone, "the resource was never released"
            time.sleep(0.2)
    assert not released_early, "the finaliser released the collection beside a pass in flight"
    # The release (Retain: the owner stamp goes) is the last write to the collection.
    assert pause.writes[-1] == "set_metadata", pause.writes
    live = qdrant.observe(collection)
    assert live is not None and OWNER not in live.metadata


# --- issue 17, item 1: status is not an approval ----------------------------------------------
#
# The attacker holds full write on `namespaces/status` (here: the admin's kubectl, a
# superset). Status may then lie about its own resource, but never cause a Qdrant write.


def shrinking(kubectl: KubectlFn, qdrant: ClientGateway, ns: str, name: str) -> dict[str, Any]:
    """A collection with text_v1 and kw_v1 on 30 points, and a spec that drops kw_v1:
    the object once the removal awaits confirmation."""
    doc = namespace_doc(ns, name, plugins=[TEXT, KEYWORDS])
    apply(kubectl, doc)
    ready(kubectl, ns, name)
    seed(
        qdrant,
        f"{ns}_{name}",
        30,
        text_v1=[1.0] * 8,
        kw_v1=qm.SparseVector(indices=[1, 2], values=[1.0, 2.0]),
    )
    doc["spec"]["plugins"] = [TEXT]
    apply(kubectl, doc)
    return awaiting(kubectl, ns, name)


def test_a_forged_operation_in_status_never_writes(
    kubectl: KubectlFn, qdrant: ClientGateway, victim: str
) -> None:
    obj = shrinking(kubectl, qdrant, victim, "forged")
    fp = obj["status"]["plan"]["fingerprint"]
    collection = f"{victim}_forged"

    # The issue's run: approvedBy annotation, the current generation, one removeVector
    # step; no confirm, confirmPlan or annotation was ever set.
    patch_status(
        kubectl,
        victim,
        "forged",
        {
            "operation": operation(
                fp,
                collection,
                "annotation",
                obj["metadata"]["generation"],
                [("removeVector", "kw_v1", "Pending")],
                outcome(fp, vectorsRemoved=["kw_v1"], vectorsTotal=["text_v1"]),
            )
        },
    )
    obj = until(
        kubectl,
        victim,
        "forged",
        lambda o: "operation" not in o.get("status", {}),
        60,
        "the operator to act on the forged operation",
    )
    live = qdrant.observe(collection)
    assert live is not None and sorted(live.names) == ["kw_v1", "text_v1"], (
        "a forged status.operation removed kw_v1: nothing approved it"
    )
    assert live.points_count == 30
    assert condition(obj, "Ready").get("reason") == "AwaitingConfirmation", obj["status"]
    ignored = [e for e in events(kubectl, victim, "forged") if e["reason"] == "OperationIgnored"]
    assert ignored and "status is not an approval" in ignored[0]["message"]
    # Passes go on (resync) and still nothing is written.
    again = until(
        kubectl,
        victim,
        "forged",
        lambda o: (
            condition(o, "Ready").get("reason") == "AwaitingConfirmation"
            and condition(o, "Ready").get("lastTransitionTime") is not None
        ),
        60,
        "the plan still awaiting confirmation",
    )
    assert again["status"]["plan"]["fingerprint"] == fp
    live = qdrant.observe(collection)
    assert live is not None and sorted(live.names) == ["kw_v1", "text_v1"]


def test_clearing_status_vectors_never_reverts_a_change_by_hand(
    kubectl: KubectlFn, qdrant: ClientGateway, victim: str
) -> None:
    """Review 17 F2: status.vectors was the drift baseline; clearing it (or forging
    status.collection, which cleared it) made the operator revert a change by hand
    without approval. The baseline is the operator's record on the collection."""
    apply(kubectl, namespace_doc(victim, "drifted", plugins=[TEXT, KEYWORDS]))
    ready(kubectl, victim, "drifted")
    collection = f"{victim}_drifted"
    qdrant.delete_vector(collection, "kw_v1")  # a change by hand
    awaiting(kubectl, victim, "drifted")

    patch_status(kubectl, victim, "drifted", {"vectors": None, "collection": "forged"})
    # The next pass reports the live vectors again: it ran after the forgery.
    obj = until(
        kubectl,
        victim,
        "drifted",
        lambda o: (
            o.get("status", {}).get("vectors") is not None
            and o["status"].get("collection") == collection
        ),
        90,
        "a pass after the status edit",
    )
    live = qdrant.observe(collection)
    assert live is not None and live.names == ["text_v1"], (
        "a status edit made the operator revert a change by hand without approval"
    )
    assert condition(obj, "Ready").get("reason") == "AwaitingConfirmation", obj["status"]
    assert obj["status"]["vectors"] == ["text_v1"]  # a report of what is live


def test_clearing_applied_plans_does_not_rearm_a_spent_confirm_plan(
    kubectl: KubectlFn, qdrant: ClientGateway, victim: str
) -> None:
    obj = shrinking(kubectl, qdrant, victim, "rearm")
    fp = obj["status"]["plan"]["fingerprint"]
    collection = f"{victim}_rearm"
    kw_def = qdrant.observe(collection)
    assert kw_def is not None
    sparse_kw = kw_def.by_name["kw_v1"]
    doc = namespace_doc(victim, "rearm", plugins=[TEXT], confirmPlan=fp)
    apply(kubectl, doc)
    obj = until(
        kubectl,
        victim,
        "rearm",
        lambda o: o["status"].get("lastReconfigure", {}).get("planFingerprint") == fp,
        60,
        "the approved removal",
    )
    applied_at = obj["status"]["lastReconfigure"]["time"]
    assert fp in obj["status"]["appliedPlans"]

    # The tenant makes status forget that the approval was spent ...
    patch_status(kubectl, victim, "rearm", {"appliedPlans": None})
    assert "appliedPlans" not in vns(kubectl, victim, "rearm")["status"]
    # ... and the same plan comes back (kw_v1 re-added and filled by someone with Qdrant
    # access): the same fingerprint again.
    obj = plan_comes_back(kubectl, qdrant, victim, "rearm", sparse_kw, applied_at)
    live = qdrant.observe(collection)
    assert live is not None and sorted(live.names) == ["kw_v1", "text_v1"], (
        "clearing status.appliedPlans re-armed the spent confirmPlan: kw_v1 was deleted"
    )
    assert obj["status"]["plan"]["fingerprint"] == fp
    assert "spent" in condition(obj, "Ready")["message"]


def test_an_operation_is_abandoned_without_any_right_on_status(
    kubectl: KubectlFn, qdrant: ClientGateway, victim: str
) -> None:
    obj = shrinking(kubectl, qdrant, victim, "abandon")
    fp = obj["status"]["plan"]["fingerprint"]
    collection = f"{victim}_abandon"
    # An operation approved by confirm: true hit an outage; then confirm was withdrawn.
    steps: list[tuple[str, str | None, str]] = [("removeVector", "kw_v1", "Pending")]
    record_on_collection(kubectl, qdrant, victim, "abandon", fp, "confirm", steps)
    patch_status(
        kubectl,
        victim,
        "abandon",
        {
            "operation": operation(
                fp,
                collection,
                "confirm",
                obj["metadata"]["generation"],
                steps,
                outcome(fp, vectorsRemoved=["kw_v1"], vectorsTotal=["text_v1"]),
            )
        },
    )
    obj = until(
        kubectl,
        victim,
        "abandon",
        lambda o: condition(o, "Stalled").get("reason") == "OperationHalted",
        60,
        "the operation to be halted",
    )
    message = condition(obj, "Stalled")["message"]
    assert f"vectorschema.dev/abandon={fp}" in message, message
    assert "status.operation" not in message, message

    # The tenant's own right (annotate its Namespace resource) is enough to give it up.
    kubectl("annotate", "vns", "abandon", "-n", victim, f"vectorschema.dev/abandon={fp}")
    obj = until(
        kubectl,
        victim,
        "abandon",
        lambda o: (
            "operation" not in o["status"]
            and condition(o, "Ready").get("reason") == "AwaitingConfirmation"
        ),
        60,
        "the operation to be abandoned",
    )
    live = qdrant.observe(collection)
    assert live is not None and sorted(live.names) == ["kw_v1", "text_v1"]
    assert "vectorschema.dev/operation" not in live.metadata
    assert any(e["reason"] == "OperationAbandoned" for e in events(kubectl, victim, "abandon"))


# --- issue 17, items 3 and 4: bounded cost per tenant; the webhook reads no Secret -----------
#
# Kept apart from the tests above (another change adds tests to this module too). The
# operator runs in this process: its caps are read from the environment on every pass, so
# a test sets them with monkeypatch; the webhook's handler is called as kopf would call it,
# with the running operator's memo, against the real API server.


def _operator_memo() -> Any:
    from tests.e2e.operator_env import _memos

    return _memos[-1]


def create(kubectl: KubectlFn, doc: dict[str, Any]) -> None:
    """`kubectl create` (apply would copy a huge Secret into an annotation, over its cap)."""
    kubectl("create", "-f", "-", input=json.dumps(doc))


def forge(
    kubectl: KubectlFn, namespace: str, name: str, spec: dict[str, Any], victim_index: Any
) -> tuple[str | None, list[str]]:
    """Post a forged AdmissionReview CREATE to the webhook's handler (as kopf would call
    it for a request that reached the port): (refusal, warnings).

    `victim_index` is what an operator that indexed labelled Secrets kept (the webhook of
    earlier versions read API keys from it); the current handler takes no such argument.
    """
    import asyncio

    import kopf

    from vectorschema.k8s import handlers, kube

    doc = {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "kind": "Namespace",
        "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4())},
        "spec": spec,
    }
    warnings: list[str] = []
    try:
        asyncio.run(
            handlers.plan_at_admission(  # type: ignore[call-arg]
                body=doc,  # type: ignore[arg-type]
                old=None,
                warnings=warnings,
                memo=_operator_memo(),
                labelled_secrets=victim_index,
                # kopf's indexes, as the handler gets them (the Plugins as they are now)
                plugin_specs=kube.list_plugin_specs(),
                namespace_labels={},
                namespace_uids={},
            )
        )
    except kopf.AdmissionError as exc:
        return str(exc), warnings
    return None, warnings


def test_a_forged_create_reads_no_secret_and_learns_nothing(
    kubectl: KubectlFn, qdrant: ClientGateway, allowed_ports: list[int], victim: str
) -> None:
    """A forged CREATE in the victim's namespace, naming the victim's collection and
    labelled Secret: no key leaves, nothing is read, and the answer is the same as for a
    collection and a Secret that do not exist."""
    from vectorschema.api import default_collection_name

    key = f"victim-key-{uuid.uuid4().hex}"
    apply(kubectl, secret_doc(victim, "qdrant-key", {"api-key": key.encode()}))
    apply(kubectl, namespace_doc(victim, "catalog", plugins=[TEXT]))
    ready(kubectl, victim, "catalog")
    collection = default_collection_name(victim, "catalog")
    text_only(qdrant, collection, 7)
    index = {
        (victim, "qdrant-key"): [
            {
                "labels": {SECRET_LABEL_KEY: "true"},
                "data": {"api-key": base64.b64encode(key.encode()).decode()},
            }
        ]
    }

    with Listener(allowed_ports[0]) as listener:

        def probe(
            collection_name: str, secret: str, own_url: bool, name: str = "probe"
        ) -> tuple[str, str]:
            spec: dict[str, Any] = {
                "plugins": [IMAGE],
                "collectionName": collection_name,
                "adopt": True,
            }
            if own_url:
                spec["qdrant"] = {
                    "url": listener.url,
                    "apiKeySecretRef": {"name": secret, "key": "api-key"},
                }
            refusal, warnings = forge(kubectl, victim, name, spec, index)
            said = json.dumps([refusal, warnings])
            # the request's own words are not a leak: take them out before comparing
            return said.replace(collection_name, "<C>").replace(secret, "<S>"), said

        for own_url in (True, False):
            real, real_text = probe(collection, "qdrant-key", own_url)
            fake, _ = probe(f"{victim}_nothing-here", "no-such-secret", own_url)
            assert real == fake, f"the answer tells the victim's data apart: {real} vs {fake}"
            for secret_data in (key, "catalog", "text_v1", "7 point"):
                assert secret_data not in real_text, f"{secret_data!r} leaked: {real_text}"
            # nor does it tell which names exist in the victim's namespace
            existing, _ = probe(f"{victim}_nothing-here", "no-such-secret", own_url, "catalog")
            assert existing == fake, f"the answer tells an existing name apart: {existing}"
        assert listener.received == [], [r.text() for r in listener.received]


def test_an_api_key_over_the_cap_is_refused_naming_the_secret_and_never_sent(
    kubectl: KubectlFn, allowed_ports: list[int], attacker: str
) -> None:
    huge = b"K" * 200_000  # one line of printable ASCII: only its size is wrong
    create(kubectl, secret_doc(attacker, "huge", {"api-key": huge}))
    with Listener(allowed_ports[1]) as server:
        apply(
            kubectl,
            namespace_doc(
                attacker,
                "bloated",
                plugins=[TEXT],
                qdrant={"url": server.url, "apiKeySecretRef": {"name": "huge", "key": "api-key"}},
            ),
        )
        obj = stalled(kubectl, attacker, "bloated", "SecretInvalid")
        message = reason_of(obj)[1]
        sys.__stdout__.write(f"\n{message}\n")
        assert message.startswith("spec.qdrant.apiKeySecretRef.key: ")
        assert f"Secret {attacker}/huge" in message and "at most 4096" in message
        assert server.received == [], "a request reached the server"
    assert "KKKKKKKK" not in everything_shown(kubectl, attacker, "bloated")


def test_the_admins_caps_stall_a_namespace_naming_the_field(
    kubectl: KubectlFn,
    qdrant: ClientGateway,
    attacker: str,
    victim: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vectorschema.api import default_collection_name

    monkeypatch.setenv("VECTORSCHEMA_MAX_SHARD_NUMBER", "2")
    monkeypatch.setenv("VECTORSCHEMA_MAX_VECTORS", "1")
    monkeypatch.setenv("VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE", "2")

    apply(kubectl, namespace_doc(attacker, "shards", plugins=[TEXT], shardNumber=3))
    obj = stalled(kubectl, attacker, "shards", "LimitExceeded")
    assert reason_of(obj)[1].startswith("spec.shardNumber: 3 is more than the 2")
    shown = [reason_of(obj)[1]]
    apply(kubectl, namespace_doc(attacker, "wide", plugins=[TEXT, IMAGE]))
    obj = stalled(kubectl, attacker, "wide", "LimitExceeded")
    assert "VECTORSCHEMA_MAX_VECTORS" in reason_of(obj)[1]
    for name in ("shards", "wide"):  # no Qdrant write for either
        assert qdrant.observe(default_collection_name(attacker, name)) is None

    # Per Kubernetes namespace: the oldest two are served, the newest is refused.
    for name in ("first", "second"):
        apply(kubectl, namespace_doc(victim, name, plugins=[TEXT]))
        ready(kubectl, victim, name)
    apply(kubectl, namespace_doc(victim, "third", plugins=[TEXT]))
    obj = stalled(kubectl, victim, "third", "LimitExceeded")
    assert reason_of(obj)[1].startswith("metadata.namespace: ")
    shown.append(reason_of(obj)[1])
    sys.__stdout__.write("\n" + "\n".join(shown) + "\n")
    assert qdrant.observe(default_collection_name(victim, "third")) is None
    kubectl("delete", "vns", "first", "-n", victim)
    ready(kubectl, victim, "third", timeout=90)  # a slot came free


def test_a_hostile_tenant_cannot_slow_another_tenants_new_namespace(
    kubectl: KubectlFn,
    qdrant: ClientGateway,
    attacker: str,
    victim: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Huge labelled Secrets, a flood of Namespace resources up to and past the cap,
    create/delete churn and forged admission reviews, all at once; meanwhile a victim's
    new Namespace becomes Ready within the bound, and the attacker causes no Qdrant write
    it was not allowed."""
    from vectorschema.api import default_collection_name

    monkeypatch.setenv("VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE", "12")
    closed = "http://127.0.0.1:1"  # on the session's allowlist
    for i in range(8):
        create(kubectl, secret_doc(attacker, f"huge-{i}", {"api-key": b"K" * 400_000}))
    flood = [
        namespace_doc(
            attacker,
            f"flood-{i}",
            plugins=[TEXT],
            qdrant={"url": closed, "apiKeySecretRef": {"name": f"huge-{i % 8}", "key": "api-key"}},
        )
        for i in range(8)
    ] + [namespace_doc(attacker, f"bulk-{i}", plugins=[TEXT]) for i in range(12)]
    apply(kubectl, *flood)

    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        i = 0
        while not stop.is_set():
            doc = namespace_doc(attacker, f"churn-{i % 3}", plugins=[TEXT])
            kubectl("apply", "-f", "-", input=json.dumps(doc), check=False)
            kubectl(
                "delete",
                "vns",
                f"churn-{(i + 1) % 3}",
                "-n",
                attacker,
                "--wait=false",
                "--ignore-not-found",
                check=False,
            )
            i += 1

    def forged_reviews() -> None:
        while not stop.is_set():
            try:
                forge(
                    kubectl,
                    victim,
                    f"probe-{uuid.uuid4().hex[:6]}",
                    {"plugins": [TEXT], "collectionName": f"{victim}_fresh", "adopt": True},
                    {},
                )
            except BaseException as exc:
                errors.append(exc)
                return

    workers = [threading.Thread(target=churn, daemon=True)] + [
        threading.Thread(target=forged_reviews, daemon=True) for _ in range(2)
    ]
    for w in workers:
        w.start()
    try:
        started = time.monotonic()
        apply(kubectl, namespace_doc(victim, "fresh", plugins=[TEXT]))
        ready(kubectl, victim, "fresh", timeout=30)
        took = time.monotonic() - started
        sys.__stdout__.write(f"\nthe victim's new Namespace was Ready after {took:.1f} s\n")
    finally:
        stop.set()
        for w in workers:
            w.join(60)
    assert not errors, errors
    for i in range(8):  # the huge keys were refused (or the resource is over the cap)
        obj = settled(kubectl, attacker, f"flood-{i}")
        assert condition(obj, "Stalled").get("status") == "True"
        reason, message = reason_of(obj)
        assert reason in ("SecretInvalid", "LimitExceeded"), (reason, message)
        assert "at most 4096" in message or message.startswith("metadata.namespace: ")
    # the newest of the attacker's resources are beyond the cap: no collection for them
    over = [
        name
        for name in [f"flood-{i}" for i in range(8)] + [f"bulk-{i}" for i in range(12)]
        if qdrant.observe(default_collection_name(attacker, name)) is not None
    ]
    assert len(over) <= 12, over


# --- issue 17, item 2: roles for people ---------------------------------------------------------

ROLES = Path(__file__).resolve().parents[2] / "manifests" / "operator" / "roles.yaml"


def can_i(kubectl: KubectlFn, who: str, ns: str | None, verb: str, what: str, *extra: str) -> bool:
    """`kubectl auth can-i`, impersonating `who` (admin credentials may impersonate)."""
    where = ["-n", ns] if ns else []
    done = kubectl("auth", "can-i", verb, what, *where, *extra, f"--as={who}", check=False)
    answer = done.stdout.strip()
    assert answer in ("yes", "no"), done.stdout + done.stderr
    return answer == "yes"


def test_roles_for_people_let_a_tenant_edit_its_resources_and_nothing_more(
    kubectl: KubectlFn, victim: str
) -> None:
    kubectl("apply", "-f", str(ROLES))
    for sa, role in (("editor", "edit"), ("viewer", "view")):
        kubectl("create", "serviceaccount", sa, "-n", victim)
        # The built-in roles: ours reach them by aggregation (kube-controller-manager).
        kubectl(
            "create",
            "rolebinding",
            sa,
            "-n",
            victim,
            f"--clusterrole={role}",
            f"--serviceaccount={victim}:{sa}",
        )
    editor = f"system:serviceaccount:{victim}:editor"
    viewer = f"system:serviceaccount:{victim}:viewer"
    vns_ = "namespaces.vectorschema.dev"
    deadline = time.monotonic() + 60
    while not (
        can_i(kubectl, editor, victim, "create", vns_)
        and can_i(kubectl, viewer, victim, "get", vns_)
    ):
        assert time.monotonic() < deadline, (
            "the built-in edit/view roles never granted Namespace resources: no role for "
            "people is aggregated into them"
        )
        time.sleep(0.5)

    # edit (RoleBinding in its namespace): its Namespace resources, nothing more.
    for verb in ("create", "patch", "update", "delete", "get", "list", "watch"):
        assert can_i(kubectl, editor, victim, verb, vns_), verb
    assert not can_i(kubectl, editor, victim, "patch", vns_, "--subresource=status")
    assert not can_i(kubectl, editor, victim, "update", vns_, "--subresource=status")
    assert not can_i(kubectl, editor, None, "create", "plugins.vectorschema.dev")
    assert not can_i(kubectl, editor, "default", "create", vns_)  # only its namespace
    # view: read, never write.
    assert can_i(kubectl, viewer, victim, "get", vns_)
    assert can_i(kubectl, viewer, victim, "get", vns_, "--subresource=status")
    for verb in ("create", "patch", "delete"):
        assert not can_i(kubectl, viewer, victim, verb, vns_), verb

    # Not only what RBAC says: a real status patch as the editor is refused.
    apply(kubectl, namespace_doc(victim, "mine", plugins=[TEXT]))
    refused = kubectl(
        "patch",
        "vns",
        "mine",
        "-n",
        victim,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"appliedPlans": []}}),
        f"--as={editor}",
        check=False,
    )
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused.stderr

    # Bound cluster-wide, the edit role still writes no Plugin and no status; the
    # plugin-admin role (for platform admins) writes Plugins.
    admin = f"system:serviceaccount:{victim}:platform"
    kubectl("create", "serviceaccount", "platform", "-n", victim)
    bindings = {
        f"{victim}-editor": ("vectorschema-edit", "editor"),
        f"{victim}-platform": ("vectorschema-plugin-admin", "platform"),
    }
    try:
        for name, (role, sa) in bindings.items():
            kubectl(
                "create",
                "clusterrolebinding",
                name,
                f"--clusterrole={role}",
                f"--serviceaccount={victim}:{sa}",
            )
        assert can_i(kubectl, editor, "default", "create", vns_)
        assert not can_i(kubectl, editor, None, "create", "plugins.vectorschema.dev")
        assert not can_i(kubectl, editor, "default", "patch", vns_, "--subresource=status")
        for verb in ("create", "patch", "delete"):
            assert can_i(kubectl, admin, None, verb, "plugins.vectorschema.dev"), verb
        assert not can_i(
            kubectl, admin, None, "patch", "plugins.vectorschema.dev", "--subresource=status"
        )
        assert not can_i(kubectl, admin, victim, "create", vns_)
    finally:
        kubectl("delete", "clusterrolebinding", *bindings, "--ignore-not-found", check=False)


# --- issue 17, item 5: deletion always ends, for any valid name ---------------------------------


def test_a_253_character_name_gets_a_status_and_its_deletion_completes(
    kubectl: KubectlFn, qdrant: ClientGateway, attacker: str
) -> None:
    """The longest name Kubernetes takes cannot make a default collection name (Qdrant
    takes 255 characters): with it alone the resource is Stalled with a message naming
    the field; with a custom collectionName it is served. Both are deleted in bounded
    time."""
    long_name = "n" * 253
    custom = "c" * 252
    named = f"{attacker}_long"
    apply(
        kubectl,
        namespace_doc(attacker, long_name, plugins=[TEXT], deletionPolicy="Delete"),
        namespace_doc(
            attacker, custom, plugins=[TEXT], deletionPolicy="Delete", collectionName=named
        ),
    )
    obj = stalled(kubectl, attacker, long_name, "InvalidSpec")
    message = reason_of(obj)[1]
    assert "metadata.name" in message and "spec.collectionName" in message, message
    obj = ready(kubectl, attacker, custom)
    assert obj["status"]["collection"] == named
    assert qdrant.observe(named) is not None

    kubectl("delete", "vns", long_name, custom, "-n", attacker, "--timeout=90s")
    assert qdrant.observe(named) is None  # deletionPolicy: Delete ran
    left = kubectl("get", "vns", "-n", attacker, "-o", "name").stdout.split()
    assert left == [], left


# --- issue 17, item 6: the scope is the admins' (Kubernetes namespace labels) -------------------


def test_a_tenant_relabelling_its_resource_cannot_leave_its_installation(
    kubectl: KubectlFn, victim: str, attacker: str
) -> None:
    """The session operator serves the Kubernetes namespaces without the label
    `OTHER_INSTALLATION` (VECTORSCHEMA_NAMESPACE_SELECTOR). A tenant labelling its own
    resource with it stays served, under this installation's policy; a resource in a
    namespace an admin gave to another installation is never served, whatever its labels."""
    doc = namespace_doc(victim, "stay", plugins=[TEXT])
    apply(kubectl, doc)
    ready(kubectl, victim, "stay")
    # The tenant relabels its resource, as if to move it to the other installation ...
    kubectl("label", "vns", "stay", "-n", victim, f"{OTHER_INSTALLATION}=other", "team=b")
    # ... and changes it: this installation still serves it.
    doc["spec"]["plugins"] = [TEXT, IMAGE]
    apply(kubectl, doc)
    obj = until(
        kubectl,
        victim,
        "stay",
        lambda o: (
            o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"]
            and o["status"].get("vectors") == ["text_v1", "image_v1"]
        ),
        60,
        "the relabelled resource to be served by its installation",
    )
    assert condition(obj, "Ready").get("status") == "True", obj["status"]

    # A namespace the admin gave to the other installation: its tenant's resource (even
    # labelled as if it belonged here) is never served by this one.
    other = f"other-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", other)
    try:
        kubectl("label", "namespace", other, f"{OTHER_INSTALLATION}=other")
        theirs = namespace_doc(other, "elsewhere", plugins=[TEXT])
        theirs["metadata"]["labels"] = {OTHER_INSTALLATION: "here", "team": "a"}
        apply(kubectl, theirs)
        # Sync point: two more passes of a served resource, started after the apply.
        state = wakeups()
        before = state.passes[(victim, "stay")]
        deadline = time.monotonic() + 60
        while state.passes[(victim, "stay")] < before + 2:
            assert time.monotonic() < deadline, "the served resource stopped being reconciled"
            time.sleep(0.2)
        got = vns(kubectl, other, "elsewhere")
        assert not got.get("status"), got["status"]
        assert not got["metadata"].get("finalizers"), got["metadata"]
        assert (other, "elsewhere") not in state.passes
    finally:
        kubectl("delete", "namespace", other, "--wait=false", check=False)


# --- issue 17, item 7: an alias is never followed ---------------------------------------------


def test_an_alias_inside_the_prefix_is_never_followed(
    kubectl: KubectlFn, qdrant: ClientGateway, victim: str, attacker: str
) -> None:
    """Someone with Qdrant access made an alias inside the attacker's prefix that points at
    the victim's collection. The attacker names it, with every approval it can give: the
    operator refuses the name before reading or writing anything, and says nothing of the
    victim's collection."""
    apply(kubectl, namespace_doc(victim, "catalog", plugins=[TEXT]))
    ready(kubectl, victim, "catalog")
    theirs = f"{victim}_catalog"
    text_only(qdrant, theirs, 25)
    alias = f"{attacker}_alias"
    with client_of(qdrant) as client:
        client.update_collection_aliases(
            [
                qm.CreateAliasOperation(
                    create_alias=qm.CreateAlias(collection_name=theirs, alias_name=alias)
                )
            ]
        )
    try:
        apply(
            kubectl,
            namespace_doc(
                attacker,
                "through",
                plugins=[IMAGE],
                collectionName=alias,
                adopt=True,
                strategy="Recreate",
                confirm=True,
                deletionPolicy="Delete",
            ),
        )
        obj = stalled(kubectl, attacker, "through", "CollectionIsAlias")
        assert "spec.collectionName" in reason_of(obj)[1]
        shown = everything_shown(kubectl, attacker, "through")
        assert victim not in shown, "the alias's target (the victim's collection) was shown"
        assert "pointsCount" not in obj["status"] and "vectors" not in obj["status"]
        live = qdrant.observe(theirs)
        assert live is not None and live.points_count == 25 and live.names == ["text_v1"]
        assert live.metadata[OWNER] == f"{victim}/catalog"

        # Its deletion (deletionPolicy: Delete) ends, and drops nothing through the alias.
        kubectl("delete", "vns", "through", "-n", attacker, "--timeout=90s")
        live = qdrant.observe(theirs)
        assert live is not None and live.points_count == 25
    finally:
        with client_of(qdrant) as client:
            client.update_collection_aliases(
                [qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias))]
            )
