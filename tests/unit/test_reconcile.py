"""`reconcile()` against a real Qdrant: qdrant-client's local mode, on disk in tmp_path.

No mock of Qdrant: `Recording` is a thin wrapper that delegates every call to the real
gateway and writes the call's name into a log shared with the intent writer, so tests can
say which Qdrant calls were made, and in which order relative to `write_intent`. It can
also simulate an operator crash (`Crash`, not a GatewayError) just before one call, or
inject a gateway error there.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import (
    IMAGE,
    IMAGE_VECTOR,
    TEXT,
    TEXT_VECTOR,
    dense,
    inline,
    namespace,
    ns_spec,
    sparse,
)
from qdrant_client import models as qm
from tests.seams import client_of

from vectorschema.api import (
    ABANDON_ANNOTATION,
    APPLIED_METADATA_KEY,
    CONFIRM_ANNOTATION,
    LIVE_VECTORS_METADATA_KEY,
    OPERATION_METADATA_KEY,
    OWNER_METADATA_KEY,
    OWNER_UID_METADATA_KEY,
    RETAINED_BY_METADATA_KEY,
    RETAINED_UID_METADATA_KEY,
    ActionKind,
    ConditionStatus,
    LastReconfigure,
    NamespaceResource,
    NamespaceStatus,
    Operation,
    OperationStep,
    PluginSpec,
    Strategy,
)
from vectorschema.api.reasons import EventReason, Reason
from vectorschema.api.status import StepState
from vectorschema.controller.backoff import RetryKind
from vectorschema.controller.reconcile import reconcile
from vectorschema.controller.results import Result
from vectorschema.controller.status_writer import Conflict
from vectorschema.core.operation import Intent, intent_metadata
from vectorschema.core.planning import fingerprint, resolve_desired
from vectorschema.core.policy import Policy
from vectorschema.core.schema import Capabilities, CollectionSettings, ObservedCollection, VectorDef
from vectorschema.k8s.connection import ConnectionUnavailable
from vectorschema.qdrant.client import ClientGateway
from vectorschema.qdrant.errors import QdrantRejected, QdrantTimeout, QdrantUnavailable
from vectorschema.qdrant.protocol import QdrantGateway

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
COLLECTION = "team-a_tenant"  # default name of namespace("tenant", kube_namespace="team-a")
OWNER = "team-a/tenant"

# Small vectors, so seeding points is quick.
T = dense("text_v", 4)
I = dense("image_v", 3)  # noqa: E741
S = sparse("sparse_v", modifier="idf")
PLUGINS: dict[str, PluginSpec] = {
    "text": PluginSpec(vectors=[T]),
    "image": PluginSpec(vectors=[I]),
    "sparse": PluginSpec(vectors=[S]),
    "seed-text": PluginSpec(vectors=[TEXT]),
    "seed-image": PluginSpec(vectors=[IMAGE]),
}
COLLECTIONS = [
    {"id": "col_xxx", "plugins": ["text"]},
    {"id": "col_yyy", "plugins": ["image"]},
]
WRITES = frozenset(
    {
        "create_collection",
        "delete_collection",
        "create_vector",
        "delete_vector",
        "update_vector",
        "set_metadata",
    }
)


class Crash(Exception):
    """A simulated operator crash: not a GatewayError, so reconcile() does not catch it."""


class Recording:
    """A `QdrantGateway` that delegates to a real one and logs each call's name.

    `fail` maps a method name to an exception raised once, instead of making that call.
    """

    def __init__(
        self,
        inner: QdrantGateway,
        log: list[str] | None = None,
        fail: Mapping[str, Exception] | None = None,
    ) -> None:
        self.inner = inner
        self.log: list[str] = [] if log is None else log
        self.fail = dict(fail or {})

    def _enter(self, name: str) -> None:
        error = self.fail.pop(name, None)
        if error is not None:
            self.log.append(f"{name}!")
            raise error
        self.log.append(name)

    @property
    def writes(self) -> list[str]:
        return [c for c in self.log if c in WRITES]

    def capabilities(self) -> Capabilities:
        self._enter("capabilities")
        return self.inner.capabilities()

    def check(self, vectors: Sequence[VectorDef]) -> None:
        self.inner.check(vectors)

    def observe(self, collection: str) -> ObservedCollection | None:
        self._enter("observe")
        return self.inner.observe(collection)

    @property
    def location(self) -> str:
        return self.inner.location

    def count_with_vector(self, collection: str, vector: str, exact: bool = True) -> int:
        self._enter("count_with_vector")
        return self.inner.count_with_vector(collection, vector, exact)

    def create_collection(
        self,
        collection: str,
        vectors: Sequence[VectorDef],
        settings: CollectionSettings,
        metadata: Mapping[str, Any],
    ) -> None:
        self._enter("create_collection")
        self.inner.create_collection(collection, vectors, settings, metadata)

    def delete_collection(self, collection: str) -> None:
        self._enter("delete_collection")
        self.inner.delete_collection(collection)

    def create_vector(self, collection: str, vector: VectorDef) -> None:
        self._enter("create_vector")
        self.inner.create_vector(collection, vector)

    def delete_vector(self, collection: str, vector: str) -> None:
        self._enter("delete_vector")
        self.inner.delete_vector(collection, vector)

    def update_vector(self, collection: str, vector: VectorDef) -> None:
        self._enter("update_vector")
        self.inner.update_vector(collection, vector)

    def set_metadata(self, collection: str, metadata: Mapping[str, Any]) -> None:
        self._enter("set_metadata")
        self.inner.set_metadata(collection, metadata)

    def close(self) -> None:
        self._enter("close")


class Connect:
    """The `connect` callable: counts calls; raises `error` instead when given one."""

    def __init__(self, gateway: QdrantGateway | None, error: Exception | None = None) -> None:
        self.gateway = gateway
        self.error = error
        self.calls = 0

    def __call__(self) -> QdrantGateway:
        self.calls += 1
        if self.error is not None:
            raise self.error
        assert self.gateway is not None
        return self.gateway


class Intents:
    """The intent writer: keeps a copy of each status written, and logs the write."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        self.written: list[NamespaceStatus] = []

    def __call__(self, status: NamespaceStatus) -> None:
        self.log.append("write_intent")
        self.written.append(status.model_copy(deep=True))


class Harness:
    """One reconcile pass against the shared local store, recorded."""

    def __init__(self, qdrant: ClientGateway, fail: Mapping[str, Exception] | None = None):
        self.log: list[str] = []
        self.gateway = Recording(qdrant, self.log, fail)
        self.connect = Connect(self.gateway)
        self.intents = Intents(self.log)

    def consume(self) -> None:
        self.log.append("consume_annotation")
        if self.consume_error is not None:
            raise self.consume_error

    consume_error: Exception | None = None

    def run(
        self,
        resource: NamespaceResource,
        plugins: Mapping[str, PluginSpec] = PLUGINS,
        now: datetime = NOW,
        policy: Policy | None = None,
    ) -> Result:
        return reconcile(
            resource,
            plugins,
            self.connect,
            now=now,
            write_intent=self.intents,
            policy=policy,
            consume_annotation=self.consume,
        )


def run(
    qdrant: ClientGateway,
    resource: NamespaceResource,
    plugins: Mapping[str, PluginSpec] = PLUGINS,
    now: datetime = NOW,
) -> tuple[Result, Harness]:
    harness = Harness(qdrant)
    return harness.run(resource, plugins, now), harness


def condition(status: NamespaceStatus, type_: str) -> tuple[ConditionStatus, str]:
    c = status.condition(type_)
    assert c is not None, f"no {type_} condition"
    return c.status, c.reason


def is_ready(status: NamespaceStatus) -> bool:
    return condition(status, "Ready") == (ConditionStatus.TRUE, Reason.RECONCILED)


def seed_points(
    qdrant: ClientGateway, count: int, vectors: Mapping[str, Any], *, start: int = 0
) -> None:
    """Upsert `count` points, each holding `vectors` and a payload."""
    with client_of(qdrant) as client:
        client.upsert(
            COLLECTION,
            [
                qm.PointStruct(id=start + i, vector=dict(vectors), payload={"n": start + i})
                for i in range(count)
            ],
        )


def create_ready(
    qdrant: ClientGateway, spec: Mapping[str, Any], **kwargs: Any
) -> NamespaceResource:
    """Reconcile `spec` once (creating the collection); the resource with its new status."""
    resource = namespace(spec, **kwargs)
    result, _ = run(qdrant, resource)
    assert is_ready(result.status), result.status
    return next_pass(resource, result)


def next_pass(
    resource: NamespaceResource,
    result: Result | None = None,
    spec: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> NamespaceResource:
    """The resource as the next pass sees it: the status `result` wrote (default: the
    current one), maybe a new spec (a new generation) or new annotations."""
    status = result.status if result is not None else resource.status
    update: dict[str, Any] = {"status": None if status is None else status.model_copy(deep=True)}
    if spec is not None:
        rebuilt = namespace(
            spec, generation=(resource.metadata.generation or 0) + 1, annotations=annotations
        )
        update["spec"] = rebuilt.spec
        update["metadata"] = rebuilt.metadata
    elif annotations is not None:
        update["metadata"] = resource.metadata.model_copy(update={"annotations": annotations})
    return resource.model_copy(update=update)


def live(qdrant: ClientGateway) -> ObservedCollection:
    observed = qdrant.observe(COLLECTION)
    assert observed is not None
    return observed


BASE: dict[str, Any] = {
    "plugins": [{"name": "text"}, {"name": "image"}],
    "collections": COLLECTIONS,
}


# --- creation and steady state --------------------------------------------------------


def test_first_reconcile_creates_the_collection_stamped_with_its_owner(
    qdrant: ClientGateway,
) -> None:
    spec = {**BASE, "plugins": [*BASE["plugins"], inline("bm25", S)]}
    resource = namespace(spec, generation=3)

    result, harness = run(qdrant, resource)

    observed = live(qdrant)
    assert observed.names == ["text_v", "image_v", "sparse_v"]
    assert observed.metadata[OWNER_METADATA_KEY] == OWNER
    assert observed.metadata[OWNER_UID_METADATA_KEY] == "uid-1"
    status = result.status
    assert is_ready(status)
    assert condition(status, "Reconciling")[0] is ConditionStatus.FALSE
    assert condition(status, "Stalled")[0] is ConditionStatus.FALSE
    assert all(c.observed_generation == 3 for c in status.conditions)
    assert status.observed_generation == 3
    assert status.collection == COLLECTION
    assert status.vectors == ["text_v", "image_v", "sparse_v"]
    assert status.points_count == 0
    assert status.plan is None and status.operation is None
    assert status.last_reconfigure is not None
    assert status.last_reconfigure.status == "reconfigured"
    assert status.last_reconfigure.vectors_added == ["text_v", "image_v", "sparse_v"]
    assert [e.reason for e in result.events] == [EventReason.COLLECTION_CREATED]
    assert harness.intents.written == []  # nothing destructive: no intent record
    assert harness.gateway.writes == ["create_collection"]
    # one read and one write: what was created is known, it is not read back, and the
    # observation kept for the webhook is what a read would have shown
    assert harness.log == ["capabilities", "observe", "create_collection"]
    assert result.observation is not None and result.observation.observed is not None
    kept = result.observation.observed
    assert (kept.by_name, kept.points_count) == (observed.by_name, observed.points_count)
    assert kept.metadata == observed.metadata
    # settings: those the spec set, as set; the others unknown (a server's defaults are
    # its own), which planning reads as no opinion until the next pass reads them
    for name, value in dataclasses.asdict(kept.settings).items():
        assert value in (None, getattr(observed.settings, name))
    assert result.retry is None and not result.remove_annotation


def test_second_reconcile_changes_nothing_and_writes_nothing(qdrant: ClientGateway) -> None:
    resource = create_ready(qdrant, BASE)
    seed_points(qdrant, 3, {"text_v": [1, 0, 0, 0]})
    first, _ = run(qdrant, resource)  # the points count moved: one status change
    resource = next_pass(resource, first)

    for now in (NOW, LATER):
        result, harness = run(qdrant, resource, now=now)

        assert result.status == resource.status
        assert result.events == []
        assert harness.log == ["capabilities", "observe"]  # one read, no write
        assert harness.intents.written == []
        assert not result.remove_annotation and result.retry is None


def test_collection_deleted_by_hand_is_created_again_without_confirmation(
    qdrant: ClientGateway,
) -> None:
    resource = create_ready(qdrant, {**BASE, "strategy": "Recreate"})
    qdrant.delete_collection(COLLECTION)

    result, harness = run(qdrant, resource)

    assert is_ready(result.status)
    assert live(qdrant).names == ["text_v", "image_v"]
    assert live(qdrant).metadata[OWNER_METADATA_KEY] == OWNER
    assert harness.intents.written == []
    assert [e.reason for e in result.events] == [EventReason.COLLECTION_CREATED]


def test_vector_added_in_place_keeps_points_without_confirmation(qdrant: ClientGateway) -> None:
    resource = create_ready(qdrant, {**BASE, "plugins": [{"name": "text"}]})
    seed_points(qdrant, 20, {"text_v": [1, 2, 3, 4]})

    result, harness = run(qdrant, next_pass(resource, None, BASE))

    assert is_ready(result.status)
    assert harness.gateway.writes == ["create_vector", "set_metadata"]  # + the baseline
    assert harness.intents.written == []
    observed = live(qdrant)
    assert observed.names == ["text_v", "image_v"]
    assert observed.points_count == 20
    report = result.status.last_reconfigure
    assert report is not None
    assert report.vectors_added == ["image_v"]
    assert report.points_deleted == 0
    assert report.previous_points_count == 20
    assert report.collections_to_reprocess == ["col_yyy"]
    # the pairs to reprocess (backfill Jobs under reprocess: Auto): the added vector only
    assert [(r.collection, r.plugin, r.vectors, r.recreated) for r in result.reprocess] == [
        ("col_yyy", "image", ("image_v",), False)
    ]
    assert {r.plan for r in result.reprocess} == {report.plan_fingerprint}


def test_a_first_creation_asks_for_no_reprocessing(qdrant: ClientGateway) -> None:
    result, _ = run(qdrant, namespace(BASE))
    assert is_ready(result.status)
    assert result.status.last_reconfigure is not None
    assert result.status.last_reconfigure.collections_to_reprocess == ["col_xxx", "col_yyy"]
    assert result.reprocess == [], "nothing was lost: ingestion fills a new collection"


def test_a_collection_lost_and_created_again_is_reprocessed_whole(qdrant: ClientGateway) -> None:
    resource = create_ready(qdrant, BASE)
    with client_of(qdrant) as client:
        client.delete_collection(COLLECTION)
    result, _ = run(qdrant, next_pass(resource, None, BASE))
    assert is_ready(result.status)
    assert [(r.collection, r.plugin, r.recreated) for r in result.reprocess] == [
        ("col_xxx", "text", True),
        ("col_yyy", "image", True),
    ]


# --- nothing touched: plugins, ownership ---------------------------------------------


@pytest.mark.parametrize(
    ("plugins", "reason", "words"),
    [
        pytest.param(
            [{"name": "text"}, {"name": "missing-one"}, {"name": "missing-two"}],
            Reason.PLUGIN_NOT_FOUND,
            ["missing-one", "missing-two"],
            id="not-found",
        ),
        pytest.param(
            [{"name": "text"}, inline("text-bis", dense("text_v", 8))],
            Reason.PLUGIN_CONFLICT,
            ["'text'", "'text-bis'", "'text_v'"],
            id="conflict",
        ),
    ],
)
def test_plugin_problems_stall_without_any_qdrant_call(
    plugins: list[dict[str, Any]], reason: str, words: list[str]
) -> None:
    resource = namespace({"plugins": plugins})
    connect = Connect(None, error=AssertionError("Qdrant must not be reached"))
    intents = Intents([])

    result = reconcile(resource, PLUGINS, connect, now=NOW, write_intent=intents)

    assert connect.calls == 0
    assert intents.written == []
    status = result.status
    assert condition(status, "Stalled") == (ConditionStatus.TRUE, reason)
    assert condition(status, "Ready") == (ConditionStatus.FALSE, reason)
    message = status.condition("Stalled")
    assert message is not None
    for word in words:
        assert word in message.message
    assert status.plan is None
    assert result.retry is None


def test_plugin_conflict_message_is_the_planners(qdrant: ClientGateway) -> None:
    resource = namespace({"plugins": [{"name": "text"}, inline("other", dense("text_v", 8))]})
    result, harness = run(qdrant, resource)

    stalled = result.status.condition("Stalled")
    assert stalled is not None
    assert stalled.message.startswith("vector 'text_v' is defined differently")
    assert harness.connect.calls == 0


def test_collection_owned_elsewhere_is_left_alone(qdrant: ClientGateway) -> None:
    qdrant.create_collection(
        COLLECTION, [], CollectionSettings(), {OWNER_METADATA_KEY: "team-b/other"}
    )
    before = live(qdrant)

    result, harness = run(qdrant, namespace({**BASE, "confirm": True, "adopt": True}))

    status = result.status
    assert condition(status, "Stalled") == (
        ConditionStatus.TRUE,
        Reason.COLLECTION_OWNED_ELSEWHERE,
    )
    stalled = status.condition("Stalled")
    assert stalled is not None and "team-b/other" in stalled.message
    assert harness.gateway.writes == []
    assert harness.intents.written == []
    assert live(qdrant) == before


def test_unowned_collection_needs_adoption(qdrant: ClientGateway) -> None:
    qdrant.create_collection(
        COLLECTION, [VectorDef("text_v", T.type, 4, T.distance)], CollectionSettings(), {}
    )
    before = live(qdrant)

    result, harness = run(qdrant, namespace(BASE))

    assert condition(result.status, "Stalled") == (
        ConditionStatus.TRUE,
        Reason.ADOPTION_REQUIRED,
    )
    assert harness.gateway.writes == []
    assert live(qdrant) == before


def test_adopting_an_unowned_collection_that_matches_stamps_it(qdrant: ClientGateway) -> None:
    qdrant.create_collection(
        COLLECTION, [VectorDef("text_v", T.type, 4, T.distance)], CollectionSettings(), {}
    )

    result, harness = run(qdrant, namespace({"plugins": [{"name": "text"}], "adopt": True}))

    assert is_ready(result.status)
    assert harness.gateway.writes == ["set_metadata"]
    assert live(qdrant).metadata[OWNER_METADATA_KEY] == OWNER
    assert result.status.last_reconfigure is not None
    assert result.status.last_reconfigure.status == "no_changes_needed"


def test_adopting_an_unowned_collection_that_needs_a_change_stamps_it_in_the_same_pass(
    qdrant: ClientGateway,
) -> None:
    """BUG: with a non-empty plan the executor changes the collection but nobody stamps it;
    the stamp only comes one pass later (the empty-plan branch), so for a resync interval
    the collection is modified by us yet still unowned."""
    qdrant.create_collection(
        COLLECTION, [VectorDef("text_v", T.type, 4, T.distance)], CollectionSettings(), {}
    )

    result, _ = run(qdrant, namespace({**BASE, "adopt": True}))

    assert is_ready(result.status)
    assert live(qdrant).names == ["text_v", "image_v"]
    assert live(qdrant).metadata.get(OWNER_METADATA_KEY) == OWNER


# --- destructive plans: confirmation, intent, order -----------------------------------


def with_image_points(qdrant: ClientGateway) -> NamespaceResource:
    """A ready collection (text + image) with 25 points carrying image_v, 5 without."""
    resource = create_ready(qdrant, BASE)
    seed_points(qdrant, 25, {"text_v": [1, 2, 3, 4], "image_v": [1, 2, 3]})
    seed_points(qdrant, 5, {"text_v": [4, 3, 2, 1]}, start=100)
    result, _ = run(qdrant, resource)
    return next_pass(resource, result)


DROP_IMAGE = {**BASE, "plugins": [{"name": "text"}]}


def test_points_at_risk_are_counted_once_and_estimated_when_exact_is_too_slow(
    qdrant: ClientGateway,
) -> None:
    resource = next_pass(with_image_points(qdrant), None, DROP_IMAGE)
    slow = Harness(qdrant, fail={"count_with_vector": QdrantTimeout("timed out")})

    result = slow.run(resource)

    plan = result.status.plan
    assert plan is not None
    assert (plan.points_at_risk, plan.points_at_risk_approximate) == (25, True)
    ready = result.status.condition("Ready")
    assert ready is not None and "; about 25 point(s) at risk." in ready.message
    # the exact count timed out, then one estimate: nothing else
    assert [c for c in slow.log if c.startswith("count")] == [
        "count_with_vector!",
        "count_with_vector",
    ]
    for _ in range(3):  # the plan waits: later passes do not count again
        later = Harness(qdrant)
        again = later.run(next_pass(resource, result), now=LATER)
        assert "count_with_vector" not in later.log
        assert again.status.plan is not None and again.status.plan.points_at_risk == 25
        assert again.status.plan.points_at_risk_approximate is True


def test_destructive_plan_waits_for_confirmation_and_touches_nothing(
    qdrant: ClientGateway,
) -> None:
    resource = with_image_points(qdrant)
    before = live(qdrant)
    resource = next_pass(resource, None, DROP_IMAGE)

    result, harness = run(qdrant, resource)

    status = result.status
    assert condition(status, "Ready") == (ConditionStatus.FALSE, Reason.AWAITING_CONFIRMATION)
    assert condition(status, "Reconciling")[0] is ConditionStatus.FALSE
    assert condition(status, "Stalled")[0] is ConditionStatus.FALSE
    plan = status.plan
    assert plan is not None
    assert re.fullmatch(r"[0-9a-f]{16}", plan.fingerprint)
    assert plan.destructive
    assert [(a.action, a.vector) for a in plan.actions] == [(ActionKind.REMOVE_VECTOR, "image_v")]
    assert plan.points_at_risk == 25
    assert plan.vectors_at_risk == ["image_v"]
    ready = status.condition("Ready")
    assert ready is not None and plan.fingerprint in ready.message
    assert [(e.type, e.reason) for e in result.events] == [("Warning", EventReason.PLAN_PENDING)]
    assert plan.fingerprint in result.events[0].message
    assert harness.gateway.writes == []
    assert harness.intents.written == []
    assert live(qdrant) == before

    # waiting is steady: the next pass changes nothing and posts no new event
    again, harness = run(qdrant, next_pass(resource, result), now=LATER)
    assert again.status == result.status
    assert again.events == []
    assert harness.gateway.writes == []


def test_confirm_plan_applies_after_recording_the_intent(qdrant: ClientGateway) -> None:
    resource = with_image_points(qdrant)
    pending, _ = run(qdrant, next_pass(resource, None, DROP_IMAGE))
    assert pending.status.plan is not None
    fingerprint = pending.status.plan.fingerprint
    approved = next_pass(
        resource, pending, {**DROP_IMAGE, "confirm": False, "confirmPlan": fingerprint}
    )

    result, harness = run(qdrant, approved)

    assert is_ready(result.status)
    assert harness.log.index("write_intent") < harness.log.index("delete_vector")
    # the operator's own record on the collection, the step, then the record goes and
    # the plan is spent (on the collection, where no tenant writes)
    assert harness.gateway.writes == ["set_metadata", "delete_vector", "set_metadata"]
    assert OPERATION_METADATA_KEY not in live(qdrant).metadata
    assert live(qdrant).metadata[APPLIED_METADATA_KEY] == [fingerprint]
    intent, step_done = harness.intents.written
    assert intent.operation is not None and step_done.operation is not None
    assert intent.operation.plan_fingerprint == fingerprint
    assert intent.operation.approved_by == "confirmPlan"
    assert intent.operation.collection == COLLECTION
    assert intent.operation.connection == "embedded"
    assert [(s.action, s.vector, s.state) for s in intent.operation.steps] == [
        (ActionKind.REMOVE_VECTOR, "image_v", StepState.PENDING)
    ]
    assert [s.state for s in step_done.operation.steps] == [StepState.DONE]
    assert result.status.applied_plans == [fingerprint]
    assert condition(intent, "Reconciling") == (ConditionStatus.TRUE, Reason.APPLYING)
    assert result.status.operation is None and result.status.plan is None
    observed = live(qdrant)
    assert observed.names == ["text_v"]
    assert observed.points_count == 30
    report = result.status.last_reconfigure
    assert report is not None
    assert report.vectors_removed == ["image_v"]
    assert report.points_deleted == 0
    assert report.plan_fingerprint == fingerprint
    assert report == intent.operation.result
    assert not result.remove_annotation


def test_stale_confirm_plan_blocks_even_with_confirm(qdrant: ClientGateway) -> None:
    resource = with_image_points(qdrant)
    before = live(qdrant)
    stale = next_pass(
        resource,
        None,
        {**DROP_IMAGE, "confirm": True, "confirmPlan": "0123456789abcdef"},
    )

    result, harness = run(qdrant, stale)

    assert condition(result.status, "Ready") == (
        ConditionStatus.FALSE,
        Reason.AWAITING_CONFIRMATION,
    )
    ready = result.status.condition("Ready")
    assert ready is not None and "does not match" in ready.message
    assert harness.gateway.writes == [] and harness.intents.written == []
    assert live(qdrant) == before


def test_annotation_is_consumed_before_anything_runs(qdrant: ClientGateway) -> None:
    resource = with_image_points(qdrant)
    pending, _ = run(qdrant, next_pass(resource, None, DROP_IMAGE))
    assert pending.status.plan is not None
    fingerprint = pending.status.plan.fingerprint

    result, harness = run(
        qdrant,
        next_pass(resource, pending, DROP_IMAGE, annotations={CONFIRM_ANNOTATION: fingerprint}),
    )

    assert is_ready(result.status)
    assert not result.remove_annotation  # already gone
    first = [c for c in harness.log if c in WRITES or c in ("write_intent", "consume_annotation")]
    assert first[:4] == ["consume_annotation", "write_intent", "set_metadata", "delete_vector"]
    assert live(qdrant).names == ["text_v"]


def test_annotation_that_cannot_be_consumed_approves_nothing(qdrant: ClientGateway) -> None:
    resource = with_image_points(qdrant)
    before = live(qdrant)
    pending, _ = run(qdrant, next_pass(resource, None, DROP_IMAGE))
    assert pending.status.plan is not None
    approved = next_pass(
        resource,
        pending,
        DROP_IMAGE,
        annotations={CONFIRM_ANNOTATION: pending.status.plan.fingerprint},
    )
    harness = Harness(qdrant)
    harness.consume_error = Conflict("changed since it was read")

    with pytest.raises(Conflict):
        harness.run(approved)

    assert harness.gateway.writes == [] and harness.intents.written == []
    assert live(qdrant) == before


def test_stale_annotation_approves_nothing_and_says_so(qdrant: ClientGateway) -> None:
    resource = with_image_points(qdrant)
    before = live(qdrant)
    stale = next_pass(
        resource,
        None,
        DROP_IMAGE,
        annotations={CONFIRM_ANNOTATION: "0123456789abcdef"},
    )

    result, harness = run(qdrant, stale)

    assert condition(result.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION
    ready = result.status.condition("Ready")
    assert ready is not None and "0123456789abcdef does not match the pending plan" in ready.message
    assert not result.remove_annotation
    assert harness.gateway.writes == []
    assert live(qdrant) == before


SEED = {
    "plugins": [{"name": "seed-text"}],
    "collections": [
        {"id": "col_xxx", "plugins": ["seed-text"]},
        {"id": "col_yyy", "plugins": ["seed-image"]},
    ],
    "strategy": "Recreate",
}
SEED_CHANGE = {**SEED, "plugins": [{"name": "seed-text"}, {"name": "seed-image"}]}
SEED_MESSAGE = (
    "Qdrant collection reconfigured with 1 new vector(s). 1500 points were deleted. "
    "Re-trigger batches on the listed collections to re-ingest data with the new vectors."
)


def test_the_seed_example_waits_then_recreates_when_confirmed(qdrant: ClientGateway) -> None:
    resource = create_ready(qdrant, SEED)
    seed_points(qdrant, 1500, {TEXT_VECTOR: [0.5] * 1024})
    changed = next_pass(resource, None, SEED_CHANGE)

    pending, harness = run(qdrant, changed)

    assert condition(pending.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION
    assert pending.status.plan is not None
    assert pending.status.plan.points_at_risk == 1500
    assert [a.action for a in pending.status.plan.actions] == [ActionKind.RECREATE_COLLECTION]
    assert harness.gateway.writes == []
    assert live(qdrant).points_count == 1500

    result, harness = run(qdrant, next_pass(changed, pending, {**SEED_CHANGE, "confirm": True}))

    assert is_ready(result.status)
    writes = [c for c in harness.log if c in WRITES or c == "write_intent"]
    assert writes == [
        "write_intent",
        "set_metadata",  # the record, on the collection about to be dropped
        "delete_collection",
        "create_collection",
        "write_intent",
        "set_metadata",  # the plan spent, on the new collection
    ]
    report = result.status.last_reconfigure
    assert report is not None
    assert report.status == "reconfigured"
    assert report.previous_points_count == 1500
    assert report.vectors_added == [IMAGE_VECTOR]
    assert report.vectors_total == [TEXT_VECTOR, IMAGE_VECTOR]
    assert report.collections_to_reprocess == ["col_xxx", "col_yyy"]
    assert report.points_deleted == 1500
    assert report.strategy is Strategy.RECREATE
    assert report.message == SEED_MESSAGE
    observed = live(qdrant)
    assert observed.names == [TEXT_VECTOR, IMAGE_VECTOR]
    assert observed.points_count == 0
    assert observed.metadata[OWNER_METADATA_KEY] == OWNER
    assert result.status.points_count == 0
    assert result.status.vectors == [TEXT_VECTOR, IMAGE_VECTOR]
    assert [e.reason for e in result.events] == [EventReason.RECONFIGURED]
    # a recreate re-ingests everything each plugin feeds
    assert [(r.collection, r.plugin, r.vectors, r.recreated) for r in result.reprocess] == [
        ("col_xxx", "seed-text", (TEXT_VECTOR,), True),
        ("col_yyy", "seed-image", (IMAGE_VECTOR,), True),
    ]


# --- crash recovery ---------------------------------------------------------------------


RECREATE_BASE = {**BASE, "plugins": [{"name": "text"}], "strategy": "Recreate"}
RECREATE_CHANGE = {**BASE, "strategy": "Recreate", "confirm": True}


def crash_during(
    qdrant: ClientGateway, method: str, before: Mapping[str, Any], after: Mapping[str, Any]
) -> tuple[NamespaceResource, NamespaceStatus]:
    """Reconcile `after` (from a ready `before` with 40 points) and crash just before
    `method`; returns the resource and the last status the operator had written."""
    resource = create_ready(qdrant, before)
    seed_points(qdrant, 40, {"text_v": [1, 2, 3, 4]})
    refreshed, _ = run(qdrant, resource)
    resource = next_pass(resource, refreshed, after)
    harness = Harness(qdrant, fail={method: Crash(method)})

    with pytest.raises(Crash):
        harness.run(resource)

    intent = harness.intents.written[-1]
    assert intent.operation is not None
    return resource, intent


def test_crash_after_delete_collection_resumes_and_reports_the_recorded_operation(
    qdrant: ClientGateway,
) -> None:
    resource, intent = crash_during(qdrant, "create_collection", RECREATE_BASE, RECREATE_CHANGE)
    assert qdrant.observe(COLLECTION) is None  # the crash left no collection
    assert intent.operation is not None
    assert intent.operation.result.previous_points_count == 40

    result, harness = run(qdrant, resource.model_copy(update={"status": intent}), now=LATER)

    # Its record went with the dropped collection: the pass creates the missing
    # collection as it would any (no approval needed), and keeps the recorded report.
    assert is_ready(result.status)
    assert harness.gateway.writes == ["create_collection"]
    assert result.status.operation is None
    report = result.status.last_reconfigure
    assert report == intent.operation.result
    assert report is not None
    assert report.previous_points_count == 40
    assert report.points_deleted == 40
    assert report.vectors_added == ["image_v"]
    observed = live(qdrant)
    assert observed.names == ["text_v", "image_v"]
    assert observed.metadata[OWNER_METADATA_KEY] == OWNER


def test_crash_before_the_first_write_resumes_the_same_plan(qdrant: ClientGateway) -> None:
    resource, intent = crash_during(qdrant, "delete_collection", RECREATE_BASE, RECREATE_CHANGE)
    assert live(qdrant).points_count == 40

    result, harness = run(qdrant, resource.model_copy(update={"status": intent}), now=LATER)

    assert is_ready(result.status)
    assert harness.gateway.writes == ["delete_collection", "create_collection", "set_metadata"]
    assert result.status.last_reconfigure is not None
    assert result.status.last_reconfigure.previous_points_count == 40
    assert live(qdrant).points_count == 0
    assert live(qdrant).names == ["text_v", "image_v"]


def test_crash_between_delete_and_create_of_a_replaced_vector_resumes(
    qdrant: ClientGateway,
) -> None:
    before = {**BASE, "plugins": [{"name": "text"}, inline("image", dense("image_v", 3))]}
    after = {
        **BASE,
        "plugins": [{"name": "text"}, inline("image", dense("image_v", 5))],
        "confirm": True,
    }
    resource, intent = crash_during(qdrant, "create_vector", before, after)
    assert live(qdrant).names == ["text_v"]

    result, _ = run(qdrant, resource.model_copy(update={"status": intent}), now=LATER)

    assert is_ready(result.status)
    observed = live(qdrant)
    assert observed.names == ["text_v", "image_v"]
    assert observed.by_name["image_v"].size == 5
    assert observed.points_count == 40
    assert result.status.last_reconfigure is not None
    assert result.status.last_reconfigure.vectors_replaced == ["image_v"]
    assert result.status.last_reconfigure.points_deleted == 0


def test_recorded_operation_is_dropped_when_the_spec_moved_on(qdrant: ClientGateway) -> None:
    resource, intent = crash_during(qdrant, "delete_collection", RECREATE_BASE, RECREATE_CHANGE)
    before = live(qdrant)
    moved = next_pass(
        resource,
        Result(status=intent),
        {**BASE, "plugins": [{"name": "text"}, {"name": "sparse"}], "strategy": "Recreate"},
    )

    result, harness = run(qdrant, moved, now=LATER)

    assert result.status.operation is None
    assert condition(result.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION
    assert harness.gateway.writes == ["set_metadata"]  # its record goes, nothing else
    after = live(qdrant)
    assert OPERATION_METADATA_KEY in before.metadata
    assert OPERATION_METADATA_KEY not in after.metadata
    assert (after.names, after.points_count) == (before.names, before.points_count)


# --- drift ------------------------------------------------------------------------------


def test_vector_removed_by_hand_waits_for_confirmation(qdrant: ClientGateway) -> None:
    resource = create_ready(qdrant, BASE)
    qdrant.delete_vector(COLLECTION, "image_v")

    result, harness = run(qdrant, resource)

    assert condition(result.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION
    assert result.status.plan is not None
    assert [a.action for a in result.status.plan.actions] == [ActionKind.ADD_VECTOR]
    assert "outside the operator" in result.status.plan.reason
    assert harness.gateway.writes == []


def test_drift_keeps_waiting_on_the_next_pass(qdrant: ClientGateway) -> None:
    """BUG: the awaiting pass writes the live names into status.vectors, which is also
    `last_applied` for drift detection; the next pass sees no drift any more and re-adds
    the vector without the approval the first pass asked for (same fingerprint)."""
    resource = create_ready(qdrant, BASE)
    qdrant.delete_vector(COLLECTION, "image_v")
    pending, _ = run(qdrant, resource)
    assert condition(pending.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION

    result, harness = run(qdrant, next_pass(resource, pending), now=LATER)

    assert harness.gateway.writes == []
    assert result.status == pending.status


def test_clearing_status_vectors_does_not_hide_drift(qdrant: ClientGateway) -> None:
    """Review 17 F2: status.vectors was the drift baseline, and status is tenant-writable;
    clearing it made the next pass revert a change by hand without any approval. The
    baseline is the operator's own record on the collection; status.vectors a report."""
    resource = create_ready(qdrant, BASE)
    qdrant.delete_vector(COLLECTION, "image_v")  # a change by hand
    pending, _ = run(qdrant, resource)
    assert condition(pending.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION
    forged = next_pass(resource, pending)
    assert forged.status is not None
    forged.status.vectors = None  # kubectl patch --subresource=status

    result, harness = run(qdrant, forged, now=LATER)

    assert harness.gateway.writes == [], "a status edit caused an unapproved Qdrant write"
    assert condition(result.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION
    assert live(qdrant).names == ["text_v"]


def test_rewriting_status_collection_does_not_hide_drift(qdrant: ClientGateway) -> None:
    """Review 17 F2: a forged status.collection cleared status.vectors before planning."""
    resource = create_ready(qdrant, BASE)
    qdrant.delete_vector(COLLECTION, "image_v")
    pending, _ = run(qdrant, resource)
    forged = next_pass(resource, pending)
    assert forged.status is not None
    forged.status.collection = "something-else"

    result, harness = run(qdrant, forged, now=LATER)

    assert harness.gateway.writes == []
    assert condition(result.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION


def test_forged_status_vectors_do_not_make_drift(qdrant: ClientGateway) -> None:
    """The converse: names written into status.vectors do not turn a plan into drift."""
    resource = create_ready(qdrant, BASE)
    forged = next_pass(resource, None, THREE)
    assert forged.status is not None
    forged.status.vectors = ["text_v", "image_v", "sparse_v", "bogus_v"]

    result, harness = run(qdrant, forged)

    assert is_ready(result.status)
    assert harness.gateway.writes == ["create_vector", "set_metadata"]
    assert live(qdrant).metadata[LIVE_VECTORS_METADATA_KEY] == ["image_v", "sparse_v", "text_v"]


def test_a_collection_made_before_the_baseline_key_records_it_when_in_line(
    qdrant: ClientGateway,
) -> None:
    """Migration: a collection the operator owns without the live-vectors key (made by an
    earlier version) gets it on the first pass that finds nothing to change."""
    resource = create_ready(qdrant, BASE)
    qdrant.set_metadata(COLLECTION, {LIVE_VECTORS_METADATA_KEY: None})

    result, harness = run(qdrant, next_pass(resource))

    assert is_ready(result.status)
    assert harness.gateway.writes == ["set_metadata"]
    assert live(qdrant).metadata[LIVE_VECTORS_METADATA_KEY] == ["image_v", "text_v"]


def test_a_change_to_a_collection_without_the_baseline_key_needs_approval_once(
    qdrant: ClientGateway,
) -> None:
    """Migration: without the operator's record of the vectors it last left live, a
    difference may be a change by hand (and status cannot say: a tenant writes it), so a
    plan that changes the collection waits for approval, once; after it the key is there."""
    resource = create_ready(qdrant, BASE)
    qdrant.set_metadata(COLLECTION, {LIVE_VECTORS_METADATA_KEY: None})
    changed = next_pass(resource, None, THREE)

    pending, harness = run(qdrant, changed)

    assert harness.gateway.writes == []
    assert condition(pending.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION
    assert pending.status.plan is not None
    assert "no record of the vectors" in pending.status.plan.reason
    fp = pending.status.plan.fingerprint
    approved = next_pass(changed, pending, {**THREE, "confirmPlan": fp})
    result, _ = run(qdrant, approved)
    assert is_ready(result.status)
    assert live(qdrant).metadata[LIVE_VECTORS_METADATA_KEY] == ["image_v", "sparse_v", "text_v"]


def test_collection_name_change_is_not_taken_for_drift(qdrant: ClientGateway) -> None:
    """BUG: status.vectors of the previous collection are compared with the new one's."""
    qdrant.create_collection(
        COLLECTION,
        [VectorDef("text_v", T.type, 4, T.distance)],
        CollectionSettings(),
        {OWNER_METADATA_KEY: OWNER},
    )
    previous = NamespaceStatus(collection="team-a_old", vectors=["something_else"])
    resource = namespace({**BASE, "collectionName": COLLECTION}, status=previous)

    result, harness = run(qdrant, resource)

    assert is_ready(result.status)
    # the UID is stamped; after the change, the vectors left live (the drift baseline)
    assert harness.gateway.writes == ["set_metadata", "create_vector", "set_metadata"]
    assert live(qdrant).metadata[OWNER_UID_METADATA_KEY] == resource.metadata.uid


def test_collection_name_change_through_a_stalled_pass_is_not_taken_for_drift(
    qdrant: ClientGateway,
) -> None:
    """BUG (as above): a pass that stalls on the new collection keeps the old one's
    status.vectors, so the pass after it still compares them with the new collection."""
    qdrant.create_collection(
        COLLECTION, [VectorDef("text_v", T.type, 4, T.distance)], CollectionSettings(), {}
    )
    previous = NamespaceStatus(collection="team-a_old", vectors=["something_else"])
    resource = namespace({**BASE, "collectionName": COLLECTION}, status=previous)
    stalled, _ = run(qdrant, resource)
    assert condition(stalled.status, "Stalled")[1] == Reason.ADOPTION_REQUIRED

    result, _ = run(
        qdrant, next_pass(resource, stalled, {**BASE, "collectionName": COLLECTION, "adopt": True})
    )

    assert is_ready(result.status)
    assert live(qdrant).names == ["text_v", "image_v"]


# --- transient and permanent failures -------------------------------------------------


def test_unreachable_qdrant_is_reconciling_with_a_retry() -> None:
    gateway = ClientGateway.open(url="http://127.0.0.1:1", timeout=1)
    try:
        connect = Connect(gateway)
        result = reconcile(namespace(BASE), PLUGINS, connect, now=NOW, write_intent=Intents([]))
    finally:
        gateway.close()

    status = result.status
    assert condition(status, "Reconciling") == (ConditionStatus.TRUE, Reason.QDRANT_UNAVAILABLE)
    assert condition(status, "Ready") == (ConditionStatus.FALSE, Reason.QDRANT_UNAVAILABLE)
    assert condition(status, "Stalled")[0] is ConditionStatus.FALSE
    assert result.retry is RetryKind.UNAVAILABLE
    assert connect.calls == 1


def test_qdrant_unavailable_while_applying_is_retried(qdrant: ClientGateway) -> None:
    resource = create_ready(qdrant, {**BASE, "plugins": [{"name": "text"}]})
    harness = Harness(qdrant, fail={"create_vector": QdrantUnavailable("Qdrant went away")})

    result = harness.run(next_pass(resource, None, BASE))

    assert condition(result.status, "Reconciling") == (
        ConditionStatus.TRUE,
        Reason.QDRANT_UNAVAILABLE,
    )
    assert result.retry is RetryKind.UNAVAILABLE
    assert live(qdrant).names == ["text_v"]


def test_missing_secret_is_reconciling_with_a_retry() -> None:
    connect = Connect(None, error=ConnectionUnavailable("secret team-a/qdrant not found"))

    result = reconcile(namespace(BASE), PLUGINS, connect, now=NOW, write_intent=Intents([]))

    assert condition(result.status, "Reconciling") == (
        ConditionStatus.TRUE,
        Reason.SECRET_NOT_FOUND,
    )
    assert result.retry is RetryKind.UNAVAILABLE


def test_rejected_write_stalls_with_apply_failed(qdrant: ClientGateway) -> None:
    resource = create_ready(qdrant, {**BASE, "plugins": [{"name": "text"}]})
    harness = Harness(qdrant, fail={"create_vector": QdrantRejected("no such thing")})

    result = harness.run(next_pass(resource, None, BASE))

    assert condition(result.status, "Stalled") == (ConditionStatus.TRUE, Reason.APPLY_FAILED)
    assert ("Warning", Reason.APPLY_FAILED) in [(e.type, e.reason) for e in result.events]


# --- tenancy and approval integrity (issue 8) -------------------------------------------

THREE = {**BASE, "plugins": [{"name": "text"}, {"name": "image"}, {"name": "sparse"}]}
IMAGE_5 = inline("image", dense("image_v", 5))


def recorded(
    fingerprint: str,
    steps: Sequence[tuple[ActionKind, str | None, StepState]],
    *,
    approved_by: str = "confirmPlan",
    collection: str = COLLECTION,
    connection: str = "embedded",
    generation: int = 2,
    result: LastReconfigure | None = None,
) -> Operation:
    """An operation record as a pass writes it before its first step."""
    return Operation(
        plan_fingerprint=fingerprint,
        started="2026-01-01T00:00:00Z",
        collection=collection,
        connection=connection,
        approved_by=approved_by,  # type: ignore[arg-type]
        generation=generation,
        steps=[OperationStep(action=a, vector=v, state=s) for a, v, s in steps],
        result=result
        or LastReconfigure(
            status="reconfigured",
            previous_points_count=30,
            vectors_added=[],
            vectors_total=["image_v"],
            collections_to_reprocess=[],
            message="the whole plan's report",
            vectors_removed=["text_v"],
            vectors_replaced=["image_v"],
            plan_fingerprint=fingerprint,
        ),
    )


def record_on_collection(
    qdrant: ClientGateway,
    resource: NamespaceResource,
    operation: Operation,
    spec: Mapping[str, Any],
) -> Operation:
    """Write the operator's own record of `operation` on the collection, as a pass does
    before its first step (what a resume trusts), for the desired schema of `spec`;
    returns `operation` as status shows it."""
    parsed = ns_spec(spec)
    desired = fingerprint(
        COLLECTION,
        resolve_desired(parsed, PLUGINS),
        None,
        parsed.strategy,
        qdrant.capabilities(),
    )
    intent = Intent(
        uid=resource.metadata.uid or "",
        plan=operation.plan_fingerprint,
        desired=desired,
        approved_by=operation.approved_by,
        generation=operation.generation,
        steps=tuple(operation.step_pairs),
        connection=operation.connection,
        started=operation.started,
    )
    qdrant.set_metadata(COLLECTION, intent_metadata(intent))
    return operation.model_copy(update={"desired_fingerprint": desired})


def with_operation(
    resource: NamespaceResource, operation: Operation, spec: Mapping[str, Any]
) -> NamespaceResource:
    status = (resource.status or NamespaceStatus()).model_copy(update={"operation": operation})
    return next_pass(resource, Result(status=status), spec)


class Restamping(Recording):
    """Someone else stamps the collection right after the first vector is deleted."""

    def delete_vector(self, collection: str, vector: str) -> None:
        super().delete_vector(collection, vector)
        self.inner.set_metadata(collection, {OWNER_METADATA_KEY: "team-b/thief"})


def test_a_name_outside_the_tenant_prefix_is_refused_before_connecting(
    qdrant: ClientGateway,
) -> None:
    harness = Harness(qdrant)
    result = harness.run(namespace({**BASE, "collectionName": "team-b_catalog"}))
    assert condition(result.status, "Stalled") == (
        ConditionStatus.TRUE,
        Reason.COLLECTION_NAME_NOT_ALLOWED,
    )
    stalled = result.status.condition("Stalled")
    assert stalled is not None and "spec.collectionName" in stalled.message
    assert harness.connect.calls == 0 and harness.log == []
    anything = harness.run(
        namespace({**BASE, "collectionName": "team-b_catalog"}),
        policy=Policy.from_env({"VECTORSCHEMA_COLLECTION_NAMES": "Any"}),
    )
    assert is_ready(anything.status)


def test_ownership_is_checked_with_an_operation_recorded(qdrant: ClientGateway) -> None:
    resource = create_ready(qdrant, BASE)
    qdrant.set_metadata(COLLECTION, {OWNER_METADATA_KEY: "team-a/other"})
    op = recorded("0123456789abcdef", [(ActionKind.RECREATE_COLLECTION, None, StepState.PENDING)])
    attack = with_operation(
        resource, op, {**BASE, "strategy": "Recreate", "confirm": True, "confirmPlan": None}
    )
    harness = Harness(qdrant)
    result = harness.run(attack)
    assert condition(result.status, "Stalled")[1] == Reason.COLLECTION_OWNED_ELSEWHERE
    assert harness.gateway.writes == [] and harness.intents.written == []


def test_every_destructive_step_rereads_ownership(qdrant: ClientGateway) -> None:
    resource = create_ready(qdrant, THREE)
    harness = Harness(qdrant)
    harness.gateway = Restamping(qdrant, harness.log)
    harness.connect = Connect(harness.gateway)
    result = harness.run(
        next_pass(resource, None, {**BASE, "plugins": [{"name": "text"}], "confirm": True})
    )
    # the record, then the first removal; the second never ran
    assert harness.gateway.writes == ["set_metadata", "delete_vector"]
    assert condition(result.status, "Stalled")[1] == Reason.OPERATION_HALTED
    op = result.status.operation
    assert op is not None and op.done == [True, False]
    stalled = result.status.condition("Stalled")
    assert stalled is not None and "team-b/thief" in stalled.message
    assert "done: removeVector image_v; remaining: removeVector sparse_v" in stalled.message
    report = result.status.last_reconfigure
    assert report is not None and report.vectors_removed == ["image_v"]
    assert "interrupted" in report.message
    assert sorted(live(qdrant).names) == ["sparse_v", "text_v"]


def test_a_withdrawn_approval_stops_the_next_step(qdrant: ClientGateway) -> None:
    """The write that records a step done is guarded by the version the pass read: if the
    object changed (the approval was withdrawn), it fails and nothing further runs."""
    resource = create_ready(qdrant, THREE)
    harness = Harness(qdrant)
    writes = 0

    def intents(status: NamespaceStatus) -> None:
        nonlocal writes
        writes += 1
        harness.log.append("write_intent")
        if writes == 2:
            raise Conflict("the spec changed")

    harness.intents = intents  # type: ignore[assignment]
    with pytest.raises(Conflict):
        harness.run(
            next_pass(resource, None, {**BASE, "plugins": [{"name": "text"}], "confirm": True})
        )
    assert harness.gateway.writes == ["set_metadata", "delete_vector"]
    assert sorted(live(qdrant).names) == ["sparse_v", "text_v"]


def test_a_stale_claim_resumes_nothing(qdrant: ClientGateway) -> None:
    resource = create_ready(qdrant, BASE)
    op = recorded(
        "0123456789abcdef",
        [(ActionKind.REMOVE_VECTOR, "image_v", StepState.PENDING)],
        approved_by="confirm",
    )
    op = record_on_collection(qdrant, resource, op, DROP_IMAGE)
    harness = Harness(qdrant)

    def stale(status: NamespaceStatus) -> None:
        raise Conflict("another replica wrote since this pass read")

    harness.intents = stale  # type: ignore[assignment]
    with pytest.raises(Conflict):
        harness.run(with_operation(resource, op, {**DROP_IMAGE, "confirm": True}))
    assert harness.gateway.writes == []
    assert sorted(live(qdrant).names) == ["image_v", "text_v"]


def test_a_finished_operation_whose_approval_went_is_completed_not_halted(
    qdrant: ClientGateway,
) -> None:
    """Review 17 F14: every step ran, the operator died before it finished the record, and
    GitOps then removed the spent confirmPlan. Nothing remains, so nothing needs an
    approval: the record is finished (its plan spent), not halted until someone abandons
    it; a later spec edit is reconciled as usual."""
    resource = with_image_points(qdrant)
    pending, _ = run(qdrant, next_pass(resource, None, DROP_IMAGE))
    assert pending.status.plan is not None
    fp = pending.status.plan.fingerprint
    approved = next_pass(resource, pending, {**DROP_IMAGE, "confirmPlan": fp})
    crashing = Harness(qdrant)
    inner = crashing.gateway.set_metadata

    def set_metadata(collection: str, metadata: Mapping[str, Any]) -> None:
        if APPLIED_METADATA_KEY in metadata:
            raise Crash("before the record is finished")
        inner(collection, metadata)

    crashing.gateway.set_metadata = set_metadata  # type: ignore[method-assign]
    with pytest.raises(Crash):
        crashing.run(approved)
    assert live(qdrant).names == ["text_v"]
    assert OPERATION_METADATA_KEY in live(qdrant).metadata
    withdrawn = next_pass(approved, None, DROP_IMAGE)
    withdrawn.status = crashing.intents.written[-1]

    result, harness = run(qdrant, withdrawn, now=LATER)

    assert condition(result.status, "Stalled")[1] != Reason.OPERATION_HALTED
    assert is_ready(result.status), result.status.conditions
    assert result.status.operation is None
    assert harness.gateway.writes == ["set_metadata"]  # the record finished, nothing else
    after = live(qdrant).metadata
    assert OPERATION_METADATA_KEY not in after
    assert fp in after[APPLIED_METADATA_KEY]
    assert after[LIVE_VECTORS_METADATA_KEY] == ["text_v"]
    report = result.status.last_reconfigure
    assert report is not None and report.vectors_removed == ["image_v"]
    assert any(e.reason == EventReason.RESUMED for e in result.events)


@pytest.mark.parametrize(
    ("approved_by", "spec"),
    [
        ("confirm", {}),
        ("confirm", {"confirm": True, "confirmPlan": "fedcba9876543210"}),
        ("confirmPlan", {"confirm": True}),
        ("annotation", {"confirm": False}),  # the spec changed: a new generation
    ],
)
def test_a_recorded_operation_halts_without_its_approval_and_tells_the_truth(
    qdrant: ClientGateway, approved_by: str, spec: dict[str, Any]
) -> None:
    resource = create_ready(qdrant, {**BASE, "plugins": [{"name": "text"}, IMAGE_5]})
    qdrant.delete_vector(COLLECTION, "text_v")  # its first step ran
    op = recorded(
        "0123456789abcdef",
        [
            (ActionKind.REMOVE_VECTOR, "text_v", StepState.DONE),
            (ActionKind.REPLACE_VECTOR, "image_v", StepState.PENDING),
        ],
        approved_by=approved_by,
        generation=1,
    )
    op = record_on_collection(qdrant, resource, op, {**BASE, "plugins": [{"name": "image"}]})
    harness = Harness(qdrant)
    result = harness.run(
        with_operation(resource, op, {**BASE, "plugins": [{"name": "image"}], **spec})
    )
    assert harness.gateway.writes == [] and harness.intents.written == []
    assert condition(result.status, "Stalled")[1] == Reason.OPERATION_HALTED
    stalled = result.status.condition("Stalled")
    assert stalled is not None
    assert "done: removeVector text_v; remaining: replaceVector image_v" in stalled.message
    assert result.status.operation == op  # kept
    report = result.status.last_reconfigure
    assert report is not None
    assert report.vectors_removed == ["text_v"] and report.vectors_replaced == []
    assert report.vectors_total == ["image_v"]
    assert [e.reason for e in result.events] == [Reason.OPERATION_HALTED]
    again = harness.run(
        next_pass(
            with_operation(resource, op, {**BASE, "plugins": [{"name": "image"}], **spec}), result
        )
    )
    assert again.events == []  # said once


def test_an_approved_operation_resumes_only_its_remaining_steps(qdrant: ClientGateway) -> None:
    resource = create_ready(qdrant, {**BASE, "plugins": [{"name": "text"}, IMAGE_5]})
    qdrant.delete_vector(COLLECTION, "text_v")
    op = recorded(
        "0123456789abcdef",
        [
            (ActionKind.REMOVE_VECTOR, "text_v", StepState.DONE),
            (ActionKind.REPLACE_VECTOR, "image_v", StepState.PENDING),
        ],
    )
    op = record_on_collection(qdrant, resource, op, {**BASE, "plugins": [{"name": "image"}]})
    harness = Harness(qdrant)
    result = harness.run(
        with_operation(
            resource,
            op,
            {**BASE, "plugins": [{"name": "image"}], "confirmPlan": op.plan_fingerprint},
        )
    )
    assert is_ready(result.status)
    # the replace only, then the record goes
    assert harness.gateway.writes == ["delete_vector", "create_vector", "set_metadata"]
    assert harness.log.index("write_intent") < harness.log.index("delete_vector")
    claim = harness.intents.written[0].operation
    assert claim is not None and claim.claims == 1
    assert result.status.last_reconfigure == op.result
    assert result.status.applied_plans == [op.plan_fingerprint]
    assert live(qdrant).by_name["image_v"].size == 3


def test_an_operation_whose_plan_changed_is_closed_with_what_really_ran(
    qdrant: ClientGateway,
) -> None:
    """The world moved on: the remaining plan is not the recorded one. The old report
    ("replaced image_v") must not be shown: only the step that ran is."""
    resource = create_ready(qdrant, {**BASE, "plugins": [{"name": "text"}, IMAGE_5]})
    qdrant.delete_vector(COLLECTION, "text_v")
    op = recorded(
        "0123456789abcdef",
        [
            (ActionKind.REMOVE_VECTOR, "text_v", StepState.DONE),
            (ActionKind.REPLACE_VECTOR, "image_v", StepState.PENDING),
        ],
        approved_by="confirm",
    )
    op = record_on_collection(qdrant, resource, op, {**BASE, "plugins": [{"name": "image"}]})
    harness = Harness(qdrant)
    keep_image = {**BASE, "plugins": [IMAGE_5], "confirm": True}
    result = harness.run(with_operation(resource, op, keep_image))
    assert is_ready(result.status)
    assert result.status.operation is None
    # its record goes, and the vectors now live become the drift baseline; nothing else
    assert harness.gateway.writes == ["set_metadata", "set_metadata"]
    assert OPERATION_METADATA_KEY not in live(qdrant).metadata
    report = result.status.last_reconfigure
    assert report is not None
    assert report.vectors_removed == ["text_v"] and report.vectors_replaced == []
    assert "replaceVector image_v not done" in report.message


def test_a_spent_confirm_plan_does_not_approve_the_same_plan_again(
    qdrant: ClientGateway,
) -> None:
    resource = with_image_points(qdrant)
    pending, _ = run(qdrant, next_pass(resource, None, DROP_IMAGE))
    assert pending.status.plan is not None
    fp = pending.status.plan.fingerprint
    spec = {**DROP_IMAGE, "confirmPlan": fp}
    applied, _ = run(qdrant, next_pass(resource, pending, spec))
    assert applied.status.applied_plans == [fp]
    qdrant.create_vector(COLLECTION, VectorDef("image_v", I.type, 3, I.distance))  # by hand

    result, harness = run(qdrant, next_pass(resource, applied, spec))

    assert condition(result.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION
    assert result.status.plan is not None and result.status.plan.fingerprint == fp
    ready = result.status.condition("Ready")
    assert ready is not None and "was spent" in ready.message
    assert harness.gateway.writes == []
    # confirm: true stays a standing approval
    standing, _ = run(qdrant, next_pass(resource, applied, {**DROP_IMAGE, "confirm": True}))
    assert is_ready(standing.status)


def test_a_stamp_of_an_earlier_resource_of_the_same_name_needs_adopt(
    qdrant: ClientGateway,
) -> None:
    resource = create_ready(qdrant, BASE)
    qdrant.set_metadata(COLLECTION, {OWNER_UID_METADATA_KEY: "uid-of-an-earlier-one"})
    result, harness = run(qdrant, next_pass(resource, None, THREE))
    assert condition(result.status, "Stalled")[1] == Reason.ADOPTION_REQUIRED
    assert harness.gateway.writes == []
    adopted, harness = run(qdrant, next_pass(resource, None, {**THREE, "adopt": True}))
    assert is_ready(adopted.status)
    assert harness.gateway.writes == ["set_metadata", "create_vector", "set_metadata"]
    assert live(qdrant).metadata[OWNER_UID_METADATA_KEY] == resource.metadata.uid


def test_a_retained_collection_stays_with_its_namespace(qdrant: ClientGateway) -> None:
    create_ready(qdrant, BASE)
    qdrant.set_metadata(
        COLLECTION,
        {
            OWNER_METADATA_KEY: None,
            OWNER_UID_METADATA_KEY: None,
            RETAINED_BY_METADATA_KEY: OWNER,
            RETAINED_UID_METADATA_KEY: "uid-1",
        },
    )
    anyname = Policy.from_env({"VECTORSCHEMA_COLLECTION_NAMES": "Any"})
    thief = namespace(
        {**BASE, "collectionName": COLLECTION, "adopt": True}, kube_namespace="team-b"
    )
    harness = Harness(qdrant)
    result = harness.run(thief, policy=anyname)
    assert condition(result.status, "Stalled")[1] == Reason.COLLECTION_RETAINED_ELSEWHERE
    assert harness.gateway.writes == []
    same_ns = namespace({**BASE, "collectionName": COLLECTION}, name="again")
    assert condition(Harness(qdrant).run(same_ns).status, "Stalled")[1] == (
        Reason.ADOPTION_REQUIRED
    )
    adopted = Harness(qdrant).run(
        namespace({**BASE, "collectionName": COLLECTION, "adopt": True}, name="again")
    )
    assert is_ready(adopted.status)
    metadata = live(qdrant).metadata
    assert metadata[OWNER_METADATA_KEY] == "team-a/again"
    assert RETAINED_BY_METADATA_KEY not in metadata


def test_vector_settings_qdrant_cannot_take_are_refused_before_any_write(
    qdrant: ClientGateway,
) -> None:
    """A sparse vector with `hnsw.m` passes the CRD; under Recreate its plan would drop the
    collection and then fail to create it. It is refused before the first write."""
    resource = create_ready(qdrant, RECREATE_BASE)
    bad = inline("bad", sparse("kw", hnsw={"m": 16}))
    result, harness = run(
        qdrant,
        next_pass(
            resource, None, {**RECREATE_BASE, "plugins": [{"name": "text"}, bad], "confirm": True}
        ),
    )
    assert condition(result.status, "Stalled")[1] == Reason.INVALID_SPEC
    stalled = result.status.condition("Stalled")
    assert stalled is not None and "sparse vectors have no HNSW graph" in stalled.message
    assert harness.gateway.writes == [] and harness.intents.written == []
    assert live(qdrant).names == ["text_v"]


# --- status is not an approval (issue 17, item 1) ---------------------------------------
#
# A tenant may hold write on `namespaces/status`: whatever it writes there may make status
# lie about its own resource, but never causes a Qdrant write.


def forged(resource: NamespaceResource, operation: Operation) -> NamespaceResource:
    """`resource` as the next pass reads it after someone wrote `operation` into its
    status (the spec, and so the generation, unchanged)."""
    status = (resource.status or NamespaceStatus()).model_copy(update={"operation": operation})
    return resource.model_copy(update={"status": status})


@pytest.mark.parametrize("approved_by", ["annotation", "confirm", "confirmPlan"])
def test_a_forged_operation_in_status_writes_nothing(
    qdrant: ClientGateway, approved_by: str
) -> None:
    """The issue's run: a plan awaits confirmation; an operation record with the current
    generation and the plan's removeVector step is written into status; nothing approved
    it in spec or annotations."""
    resource = with_image_points(qdrant)
    pending, _ = run(qdrant, next_pass(resource, None, DROP_IMAGE))
    assert pending.status.plan is not None
    fp = pending.status.plan.fingerprint
    waiting = next_pass(next_pass(resource, None, DROP_IMAGE), pending)
    op = recorded(
        fp,
        [(ActionKind.REMOVE_VECTOR, "image_v", StepState.PENDING)],
        approved_by=approved_by,
        generation=waiting.metadata.generation or 0,
    )

    result, harness = run(qdrant, forged(waiting, op), now=LATER)

    assert harness.gateway.writes == [], "a forged status.operation caused a Qdrant write"
    assert sorted(live(qdrant).names) == ["image_v", "text_v"]
    assert live(qdrant).points_count == 30
    assert condition(result.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION
    assert result.status.operation is None
    ignored = [e for e in result.events if e.reason == EventReason.IGNORED]
    assert ignored and "status is not an approval" in ignored[0].message


TENANT_TEXT = "all your data was deleted by the platform team, call +1 555 0100"


@pytest.mark.parametrize(
    ("collection", "steps", "absent"),
    [
        (COLLECTION, [(ActionKind.RECREATE_COLLECTION, None, StepState.DONE)], True),
        ("team-a_other", [(ActionKind.REMOVE_VECTOR, "image_v", StepState.PENDING)], False),
        (COLLECTION, [(ActionKind.REMOVE_VECTOR, "image_v", StepState.PENDING)], False),
    ],
)
def test_a_forged_operation_puts_no_tenant_text_in_the_operators_events(
    qdrant: ClientGateway,
    collection: str,
    steps: Sequence[tuple[ActionKind, str | None, StepState]],
    absent: bool,
) -> None:
    """Review 17 F6: Events are the operator's account of what it did; text a tenant wrote
    into status.operation (its report, its fingerprint, its collection) is not repeated
    in them."""
    resource = create_ready(qdrant, BASE)
    if absent:
        qdrant.delete_collection(COLLECTION)
    op = recorded(f"0123456789abcdef {TENANT_TEXT}", steps, collection=collection)
    assert op.result is not None
    op.result = op.result.model_copy(update={"message": TENANT_TEXT})

    result, _ = run(qdrant, forged(resource, op), now=LATER)

    assert result.events
    for event in result.events:
        assert "+1 555" not in event.message, event.message


def test_a_record_of_another_resource_resumes_nothing(qdrant: ClientGateway) -> None:
    """A record on the collection binds one resource (UID): an earlier resource's is not
    this one's approval."""
    resource = with_image_points(qdrant)
    pending, _ = run(qdrant, next_pass(resource, None, DROP_IMAGE))
    assert pending.status.plan is not None
    waiting = next_pass(next_pass(resource, None, DROP_IMAGE), pending)
    op = recorded(
        pending.status.plan.fingerprint,
        [(ActionKind.REMOVE_VECTOR, "image_v", StepState.PENDING)],
        approved_by="annotation",
        generation=waiting.metadata.generation or 0,
    )
    earlier = waiting.model_copy(
        update={"metadata": waiting.metadata.model_copy(update={"uid": "uid-0"})}
    )
    op = record_on_collection(qdrant, earlier, op, DROP_IMAGE)

    result, harness = run(qdrant, forged(waiting, op), now=LATER)

    assert harness.gateway.writes == []
    assert sorted(live(qdrant).names) == ["image_v", "text_v"]
    assert condition(result.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION


def test_a_spent_confirm_plan_stays_spent_when_status_forgets_it(qdrant: ClientGateway) -> None:
    resource = with_image_points(qdrant)
    pending, _ = run(qdrant, next_pass(resource, None, DROP_IMAGE))
    assert pending.status.plan is not None
    fp = pending.status.plan.fingerprint
    spec = {**DROP_IMAGE, "confirmPlan": fp}
    applied, _ = run(qdrant, next_pass(resource, pending, spec))
    assert applied.status.applied_plans == [fp]
    assert live(qdrant).metadata[APPLIED_METADATA_KEY] == [fp]
    qdrant.create_vector(COLLECTION, VectorDef("image_v", I.type, 3, I.distance))  # by hand
    forgetful = applied.status.model_copy(update={"applied_plans": None})

    result, harness = run(qdrant, next_pass(resource, Result(status=forgetful), spec))

    assert harness.gateway.writes == [], "clearing status.appliedPlans re-armed confirmPlan"
    assert condition(result.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION
    ready = result.status.condition("Ready")
    assert ready is not None and "was spent" in ready.message
    assert sorted(live(qdrant).names) == ["image_v", "text_v"]


def test_an_operation_is_abandoned_with_the_annotation(qdrant: ClientGateway) -> None:
    """No right on status is needed to give up an operation: the annotation names it."""
    resource = create_ready(qdrant, {**BASE, "plugins": [{"name": "text"}, IMAGE_5]})
    qdrant.delete_vector(COLLECTION, "text_v")  # its first step ran
    op = recorded(
        "0123456789abcdef",
        [
            (ActionKind.REMOVE_VECTOR, "text_v", StepState.DONE),
            (ActionKind.REPLACE_VECTOR, "image_v", StepState.PENDING),
        ],
        approved_by="confirm",
    )
    spec = {**BASE, "plugins": [{"name": "image"}]}  # confirm withdrawn
    op = record_on_collection(qdrant, resource, op, spec)
    halted, _ = run(qdrant, with_operation(resource, op, spec))
    assert condition(halted.status, "Stalled")[1] == Reason.OPERATION_HALTED
    stalled = halted.status.condition("Stalled")
    assert stalled is not None and f"{ABANDON_ANNOTATION}={op.plan_fingerprint}" in stalled.message
    assert "remove status.operation" not in stalled.message

    abandoning = next_pass(
        with_operation(resource, op, spec),
        halted,
        annotations={ABANDON_ANNOTATION: op.plan_fingerprint},
    )
    result, harness = run(qdrant, abandoning, now=LATER)

    assert harness.gateway.writes == ["set_metadata"]  # its record goes, nothing else runs
    assert OPERATION_METADATA_KEY not in live(qdrant).metadata
    assert result.status.operation is None
    assert live(qdrant).by_name["image_v"].size == 5
    # what remains is a plan of its own, waiting for its own approval
    assert condition(result.status, "Ready")[1] == Reason.AWAITING_CONFIRMATION
    assert EventReason.ABANDONED in [e.reason for e in result.events]


# --- any valid name (issue 17, item 5) -----------------------------------------------------


def test_a_name_that_makes_no_default_collection_name_is_served_by_its_collection_name(
    qdrant: ClientGateway,
) -> None:
    """253 characters (the longest Kubernetes name): no default collection name (Qdrant
    takes 255); with `spec.collectionName` it is served, and the prefix rule still holds."""
    harness = Harness(qdrant)
    long = namespace({**BASE, "collectionName": "team-a_long"}, name="n" * 253)
    assert long.default_collection is None
    assert is_ready(harness.run(long).status)
    assert qdrant.observe("team-a_long") is not None
    outside = namespace({**BASE, "collectionName": "team-b_long"}, name="n" * 253)
    result = harness.run(outside)
    assert condition(result.status, "Stalled")[1] == Reason.COLLECTION_NAME_NOT_ALLOWED


class CrashAtFinish(Recording):
    """The operator dies right before it removes its record (every step done)."""

    def set_metadata(self, collection: str, metadata: Mapping[str, Any]) -> None:
        if OPERATION_METADATA_KEY in metadata and metadata[OPERATION_METADATA_KEY] is None:
            self.log.append("set_metadata!")
            raise Crash("before the record goes")
        super().set_metadata(collection, metadata)


def test_a_recreate_that_crashed_after_creating_is_spent_and_reported(
    qdrant: ClientGateway,
) -> None:
    """The new collection holds no record of the operation (it went with the old one); it
    is created with the plan already spent, so the next pass knows the operation is done
    (no OperationIgnored Warning) and a pinned confirmPlan cannot approve it again."""
    resource = create_ready(qdrant, RECREATE_BASE)
    seed_points(qdrant, 40, {"text_v": [1, 2, 3, 4]})
    refreshed, _ = run(qdrant, resource)
    resource = next_pass(resource, refreshed, RECREATE_CHANGE)
    harness = Harness(qdrant)
    harness.gateway = CrashAtFinish(qdrant, harness.log)
    harness.connect = Connect(harness.gateway)
    with pytest.raises(Crash):
        harness.run(resource)
    written = harness.intents.written[-1]
    assert written.operation is not None and written.operation.done == [True]
    fp = written.operation.plan_fingerprint
    assert live(qdrant).metadata[APPLIED_METADATA_KEY] == [fp]

    result, after = run(qdrant, resource.model_copy(update={"status": written}), now=LATER)

    assert is_ready(result.status) and result.status.operation is None
    assert after.gateway.writes == []
    assert result.status.last_reconfigure == written.operation.result
    assert EventReason.IGNORED not in [e.reason for e in result.events]
