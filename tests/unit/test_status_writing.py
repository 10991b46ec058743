"""Status diffing and writing (`controller.status_writer`), a whole pass as the operator
runs it (`controller.passes`), and a Plugin's status (`controller.plugin_status`), against
an in-memory object store: no cluster, no kopf."""

from __future__ import annotations

import copy
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from conftest import dense, inline, wire

from vectorschema.api import (
    CONFIRM_ANNOTATION,
    ConditionStatus,
    ConditionType,
    EventReason,
    NamespaceStatus,
    Reason,
)
from vectorschema.controller.backoff import RetryKind
from vectorschema.controller.finalize import Finalized
from vectorschema.controller.locks import ResourceLocks
from vectorschema.controller.passes import ready_change, run_pass, valid_plugins
from vectorschema.controller.plugin_status import plugin_status, plugin_status_patch
from vectorschema.controller.reconcile import Connector
from vectorschema.controller.results import Event
from vectorschema.controller.status_writer import (
    Conflict,
    NotFound,
    StatusWriter,
    merge_patch,
)
from vectorschema.k8s.release import release
from vectorschema.qdrant.client import ClientGateway

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
NS, NAME = "team-a", "tenant"


class Store:
    """One Namespace object in memory, with resourceVersions like the API server's."""

    def __init__(self, obj: dict[str, Any] | None) -> None:
        self.obj = obj
        self.patches: list[dict[str, Any]] = []
        self.annotations: list[tuple[str, str | None]] = []
        self.conflicts = 0  # how many status patches to refuse with Conflict

    def get(self, namespace: str, name: str) -> dict[str, Any]:
        if self.obj is None:
            raise NotFound(f"{namespace}/{name}")
        return copy.deepcopy(self.obj)

    def patch_status(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None
    ) -> str:
        assert self.obj is not None
        meta = self.obj["metadata"]
        if self.conflicts or (resource_version and resource_version != meta["resourceVersion"]):
            self.conflicts = max(0, self.conflicts - 1)
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)  # someone wrote
            raise Conflict(f"{namespace}/{name} changed")
        self.patches.append(patch)
        status = self.obj.setdefault("status", {})
        for k, v in patch.items():
            if v is None:
                status.pop(k, None)
            else:
                status[k] = v
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return str(meta["resourceVersion"])

    def set_annotation(
        self,
        namespace: str,
        name: str,
        key: str,
        value: str | None,
        resource_version: str | None = None,
    ) -> str:
        assert self.obj is not None
        meta = self.obj["metadata"]
        if resource_version and resource_version != meta["resourceVersion"]:
            raise Conflict(f"{namespace}/{name} changed")
        self.annotations.append((key, value))
        annotations = meta.setdefault("annotations", {})
        if value is None:
            annotations.pop(key, None)
        else:
            annotations[key] = value
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return str(meta["resourceVersion"])


def namespace_obj(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": NAME,
            "namespace": NS,
            "uid": "u-1",
            "generation": 1,
            "resourceVersion": "1",
            **meta,
        },
        "spec": spec,
    }


def connect_to(qdrant: ClientGateway) -> Any:
    def connector_for(resource: Any) -> Connector:
        return lambda: qdrant

    return connector_for


SPEC = {"plugins": [inline("text", dense("text_v", 4))]}


# --- merge patch and the writer -------------------------------------------------------


def test_merge_patch_deletes_what_is_gone_and_sets_the_rest() -> None:
    old = {"plan": {"fingerprint": "f"}, "collection": "c", "pointsCount": 3}
    new = {"collection": "c", "pointsCount": 4}
    assert merge_patch(old, new) == {"plan": None, "collection": "c", "pointsCount": 4}
    assert merge_patch({}, new) == new
    assert merge_patch(new, new) == new  # not a diff: top-level keys are replaced whole


def test_writer_writes_nothing_when_nothing_changed() -> None:
    status = NamespaceStatus(collection="c")
    store = Store(namespace_obj(SPEC) | {"status": status.to_wire()})
    writer = StatusWriter(store, NS, NAME, store.get(NS, NAME))
    writer.final(status)
    assert store.patches == []


def test_writer_intent_is_bound_to_the_version_read() -> None:
    store = Store(namespace_obj(SPEC))
    writer = StatusWriter(store, NS, NAME, store.get(NS, NAME))
    store.obj["metadata"]["resourceVersion"] = "7"  # type: ignore[index]  # changed since
    with pytest.raises(Conflict):
        writer.intent(NamespaceStatus(collection="c"))
    assert store.patches == []


def test_writer_final_reapplies_onto_a_fresh_object_after_a_conflict() -> None:
    store = Store(namespace_obj(SPEC) | {"status": {"collection": "old", "plan": {"x": 1}}})
    writer = StatusWriter(store, NS, NAME, store.get(NS, NAME))
    store.conflicts = 1
    writer.final(NamespaceStatus(collection="c"))
    assert store.patches == [{"plan": None, "conditions": [], "collection": "c"}]
    assert store.obj is not None and store.obj["status"] == {"conditions": [], "collection": "c"}


def test_writer_final_gives_up_after_the_last_attempt() -> None:
    store = Store(namespace_obj(SPEC))
    writer = StatusWriter(store, NS, NAME, store.get(NS, NAME))
    store.conflicts = 3
    with pytest.raises(Conflict):
        writer.final(NamespaceStatus(collection="c"), attempts=3)


# --- a whole pass ---------------------------------------------------------------------


def test_pass_on_a_missing_or_deleting_object_does_nothing(qdrant: ClientGateway) -> None:
    assert run_pass(Store(None), NS, NAME, {}, connect_to(qdrant), now=NOW) is None
    store = Store(namespace_obj(SPEC, deletionTimestamp="2026-01-01T00:00:00Z"))
    assert run_pass(store, NS, NAME, {}, connect_to(qdrant), now=NOW) is None
    assert store.patches == [] and qdrant.observe(f"{NS}_{NAME}") is None


def test_pass_writes_status_once_then_nothing_on_resync(qdrant: ClientGateway) -> None:
    store = Store(namespace_obj(SPEC))
    result = run_pass(store, NS, NAME, {}, connect_to(qdrant), now=NOW)
    assert result is not None
    ready = result.status.condition(ConditionType.READY)
    assert ready is not None and ready.status is ConditionStatus.TRUE
    assert len(store.patches) == 1
    assert store.obj is not None and store.obj["status"]["vectors"] == ["text_v"]

    again = run_pass(store, NS, NAME, {}, connect_to(qdrant), now=LATER)
    assert again is not None and again.events == []
    assert len(store.patches) == 1  # nothing changed: nothing written


def test_pass_with_an_invalid_spec_stalls_naming_the_field(qdrant: ClientGateway) -> None:
    store = Store(namespace_obj({"plugins": [{"name": "x", "vectors": [{"name": "v"}]}]}))
    result = run_pass(store, NS, NAME, {}, connect_to(qdrant), now=NOW)
    assert result is not None
    stalled = result.status.condition(ConditionType.STALLED)
    assert stalled is not None and stalled.reason == Reason.INVALID_SPEC
    assert "spec.plugins[0].vectors[0]" in stalled.message
    assert store.obj is not None and store.obj["status"]["observedGeneration"] == 1


def test_pass_consumes_the_annotation_that_approved_it(qdrant: ClientGateway) -> None:
    store = Store(namespace_obj(SPEC))
    run_pass(store, NS, NAME, {}, connect_to(qdrant), now=NOW)
    assert store.obj is not None
    store.obj["spec"] = {"plugins": [inline("text", dense("text_v", 8))]}  # replace: destructive
    store.obj["metadata"]["generation"] = 2
    pending = run_pass(store, NS, NAME, {}, connect_to(qdrant), now=NOW)
    assert pending is not None and pending.status.plan is not None
    fingerprint = pending.status.plan.fingerprint
    store.obj["metadata"]["annotations"] = {CONFIRM_ANNOTATION: fingerprint}
    applied = run_pass(store, NS, NAME, {}, connect_to(qdrant), now=LATER)
    assert applied is not None and not applied.remove_annotation  # consumed before acting
    assert store.annotations == [(CONFIRM_ANNOTATION, None)]
    assert store.obj["metadata"]["annotations"] == {}
    assert store.obj["status"]["appliedPlans"] == [fingerprint]


def test_pass_whose_intent_write_conflicts_is_retried_soon(qdrant: ClientGateway) -> None:
    store = Store(namespace_obj(SPEC | {"confirm": True}))
    run_pass(store, NS, NAME, {}, connect_to(qdrant), now=NOW)
    assert store.obj is not None
    store.obj["spec"] = {"plugins": [inline("text", dense("text_v", 8))], "confirm": True}
    store.obj["metadata"]["generation"] = 2
    store.conflicts = 1  # the intent record hits a newer version
    result = run_pass(store, NS, NAME, {}, connect_to(qdrant), now=LATER)
    assert result is not None and result.retry is RetryKind.CONFLICT
    live = qdrant.observe(f"{NS}_{NAME}")
    assert live is not None and live.by_name["text_v"].size == 4  # nothing destructive ran


def test_ready_change_is_logged_only_when_status_or_reason_moves() -> None:
    old = NamespaceStatus()
    new = NamespaceStatus()
    new.set_ready("ok", generation=1, now=NOW)
    assert ready_change(old, new) is not None
    same = new.model_copy(deep=True)
    same.set_ready("ok, other message", generation=2, now=LATER)
    assert ready_change(new, same) is None
    stalled = new.model_copy(deep=True)
    stalled.set_stalled(Reason.PLUGIN_NOT_FOUND, "x", generation=2, now=LATER)
    assert ready_change(new, stalled) is not None
    assert ready_change(new, NamespaceStatus()) is None


def test_valid_plugins_drop_invalid_specs() -> None:
    good = {"vectors": [wire(dense("v"))]}
    bad = {"vectors": [{"name": "v"}]}
    assert list(valid_plugins({"good": [good], "bad": [bad]})) == ["good"]


# --- Plugin status ------------------------------------------------------------------------


def plugin_obj(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "text", "generation": 3}, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


GOOD = {"vectors": [wire(dense("text_v", 8)), wire(dense("other", 4))]}
BAD = {"vectors": [{"name": "text_v", "type": "sparse", "size": 3}]}


def test_valid_plugin_is_ready_with_its_vectors() -> None:
    status = plugin_status(plugin_obj(GOOD), NOW)
    assert status == {
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Valid",
                "message": "",
                "lastTransitionTime": "2026-01-02T03:04:05Z",
                "observedGeneration": 3,
            }
        ],
        "vectors": ["text_v", "other"],
    }


def test_invalid_plugin_says_which_field() -> None:
    status = plugin_status(plugin_obj(BAD), NOW)
    (ready,) = status["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.vectors[0]")
    assert "vectors" not in status


def test_plugin_transition_time_moves_only_when_ready_flips() -> None:
    first = plugin_status(plugin_obj(GOOD), NOW)
    assert plugin_status_patch(plugin_obj(GOOD, first), LATER) is None  # resync: no write
    edited = plugin_status(plugin_obj({"vectors": GOOD["vectors"][:1]}, first), LATER)
    assert edited["conditions"][0]["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert edited["vectors"] == ["text_v"]
    broken = plugin_status_patch(plugin_obj(BAD, edited), LATER)
    assert broken is not None
    assert broken["conditions"][0]["lastTransitionTime"] == "2026-01-02T03:09:05Z"
    assert broken["vectors"] is None  # the merge patch removes the field


def test_plugin_status_keeps_only_the_ready_condition() -> None:
    stray = {
        "type": "Stalled",
        "status": "True",
        "reason": "X",
        "lastTransitionTime": "2020-01-01T00:00:00Z",
    }
    first = plugin_status(plugin_obj(GOOD), NOW)
    status = plugin_status(
        plugin_obj(GOOD, first | {"conditions": [*first["conditions"], stray]}), LATER
    )
    assert [c["type"] for c in status["conditions"]] == ["Ready"]


# --- one pass per resource at a time (issue 8) ------------------------------------------


class Blocking:
    """A connector that holds the pass inside it until released (a pass in flight)."""

    def __init__(self, qdrant: ClientGateway) -> None:
        self.qdrant = qdrant
        self.entered = threading.Event()
        self.go = threading.Event()
        self.calls = 0

    def __call__(self, resource: Any) -> Connector:
        def connect() -> ClientGateway:
            self.calls += 1
            self.entered.set()
            assert self.go.wait(30)
            return self.qdrant

        return connect


def test_a_second_pass_waits_for_the_one_in_flight(qdrant: ClientGateway) -> None:
    store = Store(namespace_obj(SPEC))
    locks = ResourceLocks()
    first, second = Blocking(qdrant), Blocking(qdrant)
    second.go.set()
    a = threading.Thread(
        target=run_pass, args=(store, NS, NAME, {}, first), kwargs={"locks": locks}
    )
    b = threading.Thread(
        target=run_pass, args=(store, NS, NAME, {}, second), kwargs={"locks": locks}
    )
    a.start()
    assert first.entered.wait(30)
    b.start()
    b.join(timeout=1.0)
    assert b.is_alive() and second.calls == 0  # waiting for the lock, not running
    first.go.set()
    a.join(30)
    b.join(30)
    assert not a.is_alive() and not b.is_alive()
    assert second.calls == 1  # it ran after the first, from a fresh read


def test_release_waits_for_the_pass_in_flight_and_nothing_runs_after(
    qdrant: ClientGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    store = Store(namespace_obj(SPEC))
    locks = ResourceLocks()
    in_flight = Blocking(qdrant)
    a = threading.Thread(
        target=run_pass, args=(store, NS, NAME, {}, in_flight), kwargs={"locks": locks}
    )
    a.start()
    assert in_flight.entered.wait(30)
    released: list[Event] = []
    order: list[str] = []

    def finalize(resource: Any, connect: Any) -> Finalized:
        order.append("finalize")
        return Finalized(Event("Normal", EventReason.RETAINED, "released"))

    body = store.get(NS, NAME)
    r = threading.Thread(
        target=lambda: released.append(
            release(
                body,
                0,
                retries=3,
                delay=1.0,
                connector_for=lambda res: lambda: qdrant,
                release_collection=finalize,
                locks=locks,
            )
        )
    )
    r.start()
    r.join(timeout=1.0)
    assert r.is_alive() and order == []
    assert "deletion waits for the pass in flight" in caplog.text
    in_flight.go.set()
    a.join(30)
    order.append("pass done")  # the pass ended before the finaliser ran
    r.join(30)
    assert released and released[0].message == "released"
    assert locks.released((NS, NAME), "u-1")
    patches = len(store.patches)
    late = Blocking(qdrant)
    late.go.set()
    assert run_pass(store, NS, NAME, {}, late, locks=locks) is None  # after release: nothing
    assert late.calls == 0 and len(store.patches) == patches


def test_release_gives_up_waiting_boundedly() -> None:
    locks = ResourceLocks()
    body = namespace_obj(SPEC)
    kwargs: Any = {
        "retries": 2,
        "delay": 1.0,
        "connector_for": lambda r: None,
        "release_collection": lambda r, c: None,
        "locks": locks,
        "lock_wait": 0.05,
    }
    with locks.hold((NS, NAME)):
        with pytest.raises(kopf.TemporaryError):
            run_in_thread(lambda: release(body, 0, **kwargs))
        event = run_in_thread(lambda: release(body, 1, **kwargs))
    assert event.reason == EventReason.RELEASED_UNCLEAN
    assert not locks.released((NS, NAME), "u-1")


def run_in_thread(fn: Any) -> Any:
    """Run `fn` in another thread (the lock is not re-entrant across threads)."""
    out: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(fn())
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target)
    t.start()
    t.join(30)
    if errors:
        raise errors[0]
    return out[0]
