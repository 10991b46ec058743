"""What the operator counts (controller.metering) and how it shows it (k8s.metrics):
each pass's result class, the Namespace gauges, deleted points, and every Qdrant call
through `MeteredGateway`, with exactly the metric names the docs list
(docs/reference/metrics.md)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from vectorschema.api import LastReconfigure, NamespaceStatus, Reason
from vectorschema.controller.backoff import RetryKind
from vectorschema.controller.metering import (
    MeteredGateway,
    pass_result,
    points_deleted,
    server_label,
)
from vectorschema.controller.results import Result
from vectorschema.k8s.metrics import Metrics
from vectorschema.qdrant.errors import QdrantRejected, QdrantUnavailable

NOW = datetime(2026, 1, 1, tzinfo=UTC)

METRIC_NAMES = {
    "vectorschema_reconcile_total",
    "vectorschema_reconcile_duration_seconds",
    "vectorschema_namespaces",
    "vectorschema_backfill_jobs",
    "vectorschema_backfill_duration_seconds",
    "vectorschema_plans_awaiting_approval",
    "vectorschema_destructive_operations_total",
    "vectorschema_points_deleted_total",
    "vectorschema_qdrant_requests_total",
    "vectorschema_qdrant_request_duration_seconds",
}


def status(kind: str, reconfigure: LastReconfigure | None = None) -> NamespaceStatus:
    s = NamespaceStatus()
    if kind == "ready":
        s.set_ready("ok", generation=1, now=NOW)
    elif kind == "awaiting":
        s.set_awaiting_confirmation("plan x waits", generation=1, now=NOW)
    elif kind == "stalled":
        s.set_stalled(Reason.PLUGIN_NOT_FOUND, "no plugin p", generation=1, now=NOW)
    elif kind == "reconciling":
        s.set_reconciling(Reason.QDRANT_UNAVAILABLE, "down", generation=1, now=NOW)
    s.last_reconfigure = reconfigure
    return s


def report(fingerprint: str, deleted: int) -> LastReconfigure:
    return LastReconfigure.model_validate(
        {
            "status": "reconfigured",
            "previousPointsCount": deleted,
            "vectorsAdded": [],
            "vectorsTotal": ["v"],
            "collectionsToReprocess": [],
            "message": "m",
            "pointsDeleted": deleted,
            "planFingerprint": fingerprint,
            "time": "2026-01-01T00:00:00Z",
        }
    )


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        (None, "gone"),
        (Result(status=NamespaceStatus(), retry=RetryKind.CONFLICT), "conflict"),
        (Result(status=status("ready")), "ready"),
        (Result(status=status("awaiting")), "awaiting_approval"),
        (Result(status=status("stalled")), "stalled"),
        (Result(status=status("reconciling")), "reconciling"),
    ],
)
def test_pass_result(result: Result | None, expected: str) -> None:
    assert pass_result(result) == expected


def test_points_deleted_counts_each_reconfigure_once() -> None:
    first = status("ready", report("aa", 30))
    assert points_deleted(None, first) == 30
    assert points_deleted(first, status("ready", report("aa", 30))) == 0  # same report
    assert points_deleted(first, status("ready", report("bb", 7))) == 7
    assert points_deleted(first, status("ready")) == 0


@pytest.mark.parametrize(
    ("url", "label"),
    [
        (None, "embedded"),
        ("", "embedded"),
        ("http://qdrant.qdrant.svc:6333", "http://qdrant.qdrant.svc:6333"),
        ("https://user:secret@qdrant.example/path?api-key=x", "https://qdrant.example"),
        ("http://[::1", "invalid"),
    ],
)
def test_server_label_is_an_origin_without_credentials(url: str | None, label: str) -> None:
    assert server_label(url) == label


class Recorded:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.destructive: list[str] = []

    def qdrant_request(self, server: str, outcome: str, seconds: float) -> None:
        assert seconds >= 0
        self.requests.append((server, outcome))

    def destructive_operation(self, kind: str) -> None:
        self.destructive.append(kind)


class FakeGateway:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            self.calls.append(name)
            if self.fail is not None:
                raise self.fail
            return None

        return call


def test_metered_gateway_records_every_call_and_each_destructive_one() -> None:
    rec, inner = Recorded(), FakeGateway()
    gw = MeteredGateway(inner, "http://q:6333", rec)  # type: ignore[arg-type]
    gw.observe("c")
    gw.delete_vector("c", "v")
    gw.delete_collection("c")
    gw.create_vector("c", None)  # type: ignore[arg-type]
    assert inner.calls == ["observe", "delete_vector", "delete_collection", "create_vector"]
    assert rec.requests == [("http://q:6333", "ok")] * 4
    assert rec.destructive == ["deleteVector", "deleteCollection"]


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (QdrantUnavailable("down"), "unavailable"),
        (QdrantRejected("no"), "rejected"),
        (RuntimeError("bug"), "error"),
    ],
)
def test_failed_calls_are_recorded_and_raised_unchanged(error: Exception, outcome: str) -> None:
    rec = Recorded()
    gw = MeteredGateway(FakeGateway(error), "embedded", rec)  # type: ignore[arg-type]
    with pytest.raises(type(error)) as raised:
        gw.delete_collection("c")
    assert raised.value is error
    assert rec.requests == [("embedded", outcome)]
    assert rec.destructive == []  # nothing was destroyed


def samples(metrics: Metrics) -> dict[str, float]:
    """`name{labels}` -> value, from the exposition text."""
    out = {}
    for line in metrics.exposition().decode().splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_exposition_has_exactly_the_documented_names() -> None:
    metrics = Metrics()
    metrics.observe_pass(("t", "a"), Result(status=status("awaiting", report("aa", 3))), 0.1)
    metrics.qdrant_request("embedded", "ok", 0.01)
    metrics.destructive_operation("deleteCollection")
    names = {
        re.sub(r"_(bucket|count|sum)$", "", key.split("{")[0])
        for key in samples(metrics)
        if key.startswith("vectorschema_")
    }
    assert names == METRIC_NAMES


def test_gauges_follow_the_last_pass_of_each_resource() -> None:
    metrics = Metrics()
    metrics.observe_pass(("t", "a"), Result(status=status("ready")), 0.1)
    metrics.observe_pass(("t", "b"), Result(status=status("awaiting")), 0.1)
    metrics.observe_pass(("t", "c"), Result(status=status("awaiting")), 0.1)
    metrics.observe_pass(("t", "d"), Result(status=status("stalled", report("ff", 12))), 0.1)
    seen = samples(metrics)
    assert seen['vectorschema_namespaces{ready="True",reason="Reconciled"}'] == 1
    assert seen['vectorschema_namespaces{ready="False",reason="AwaitingConfirmation"}'] == 2
    assert seen['vectorschema_namespaces{ready="False",reason="PluginNotFound"}'] == 1
    assert seen["vectorschema_plans_awaiting_approval"] == 2
    assert seen['vectorschema_reconcile_total{result="awaiting_approval"}'] == 2
    assert seen["vectorschema_reconcile_duration_seconds_count"] == 4
    assert seen["vectorschema_points_deleted_total"] == 12
    # b approved and applied, c deleted: the gauges move, the counters do not go back.
    metrics.observe_pass(("t", "b"), Result(status=status("ready")), 0.1)
    metrics.observe_pass(("t", "c"), None, 0.1)
    metrics.observe_error(0.1)
    seen = samples(metrics)
    assert seen["vectorschema_plans_awaiting_approval"] == 0
    assert seen['vectorschema_namespaces{ready="True",reason="Reconciled"}'] == 2
    assert 'vectorschema_namespaces{ready="False",reason="AwaitingConfirmation"}' not in seen
    assert seen['vectorschema_reconcile_total{result="gone"}'] == 1
    assert seen['vectorschema_reconcile_total{result="error"}'] == 1
    metrics.qdrant_request("embedded", "ok", 0.01)
    metrics.destructive_operation("deleteVector")
    seen = samples(metrics)
    assert seen['vectorschema_qdrant_requests_total{outcome="ok",server="embedded"}'] == 1
    assert seen["vectorschema_qdrant_request_duration_seconds_count"] == 1
    assert seen['vectorschema_destructive_operations_total{kind="deleteVector"}'] == 1


def test_backfill_jobs_by_state_and_each_jobs_duration_once() -> None:
    from vectorschema.api import ReprocessEntry, ReprocessState

    def with_jobs(*states: tuple[str, ReprocessState, str | None]) -> NamespaceStatus:
        st = status("ready")
        st.reprocess = [
            ReprocessEntry(
                collection=c,
                plugin="image",
                state=state,
                job=f"job-{c}",
                start_time="2026-01-01T00:00:00Z",
                completion_time=end,
            )
            for c, state, end in states
        ]
        return st

    metrics = Metrics()
    S = ReprocessState
    metrics.observe_pass(
        ("t", "a"), Result(status=with_jobs(("c1", S.RUNNING, None), ("c2", S.PENDING, None))), 0.1
    )
    seen = samples(metrics)
    assert seen['vectorschema_backfill_jobs{state="Running"}'] == 1
    assert seen['vectorschema_backfill_jobs{state="Pending"}'] == 1
    assert seen['vectorschema_backfill_jobs{state="Failed"}'] == 0
    done = with_jobs(
        ("c1", S.SUCCEEDED, "2026-01-01T00:01:30Z"), ("c2", S.FAILED, "2026-01-01T00:00:10Z")
    )
    metrics.observe_pass(("t", "a"), Result(status=done), 0.1)
    metrics.observe_pass(("t", "a"), Result(status=done), 0.1)  # seen once
    seen = samples(metrics)
    assert seen['vectorschema_backfill_jobs{state="Succeeded"}'] == 1
    assert seen['vectorschema_backfill_jobs{state="Running"}'] == 0
    assert seen['vectorschema_backfill_duration_seconds_count{state="Succeeded"}'] == 1
    assert seen['vectorschema_backfill_duration_seconds_sum{state="Succeeded"}'] == 90
    assert seen['vectorschema_backfill_duration_seconds_count{state="Failed"}'] == 1


def test_only_what_the_next_pass_is_compared_with_is_kept_per_resource() -> None:
    """The metrics keep, per Namespace, what the next pass's status is compared with (the
    last reconfigure, the backfill pairs): not its conditions and the rest (10,000
    Namespaces kept about 4 KB each). The comparisons still count each reconfigure once."""
    metrics = Metrics()
    full = status("stalled", report("ff", 12))
    assert full.conditions
    metrics.observe_pass(("t", "a"), Result(status=full), 0.1)
    kept = metrics._statuses[("t", "a")]
    assert kept.last_reconfigure == full.last_reconfigure
    assert kept.reprocess == full.reprocess
    assert not kept.conditions and kept.collection is None
    metrics.observe_pass(("t", "a"), Result(status=status("stalled", report("ff", 12))), 0.1)
    assert samples(metrics)["vectorschema_points_deleted_total"] == 12
