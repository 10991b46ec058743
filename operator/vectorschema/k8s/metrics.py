"""Prometheus metrics and the readiness endpoint, served on `VECTORSCHEMA_METRICS_PORT`
(unset: neither is served).

- `vectorschema_reconcile_total{result}`: reconcile passes by how they ended
  (`controller.metering.pass_result`): `ready`, `awaiting_approval`, `reconciling`
  (retrying, e.g. Qdrant unavailable), `stalled`, `conflict` (the object changed under the
  pass; it runs again), `gone`, `error`;
- `vectorschema_reconcile_duration_seconds`: the duration of a reconcile pass;
- `vectorschema_namespaces{ready,reason}`: Namespace resources this replica serves, by the
  status and reason of their Ready condition;
- `vectorschema_plans_awaiting_approval`: Namespace resources whose destructive plan waits
  for approval;
- `vectorschema_destructive_operations_total{kind}`: Qdrant calls that destroyed stored
  data: `deleteCollection` (a recreate, or `deletionPolicy: Delete`), `deleteVector` (a
  removed or replaced vector);
- `vectorschema_points_deleted_total`: points lost to reconfigures this replica applied
  (recreating a collection);
- `vectorschema_qdrant_requests_total{server,outcome}`: Qdrant calls by server origin
  (`scheme://host:port`, or `embedded`; never a credential) and outcome: `ok`,
  `unavailable`, `rejected`, `error`;
- `vectorschema_qdrant_request_duration_seconds`: the duration of a Qdrant call;
- `vectorschema_backfill_jobs{state}`: backfill pairs (collection x plugin) of the Namespace
  resources this replica serves, by state: `Pending`, `Running`, `Succeeded`, `Failed`,
  `Manual`;
- `vectorschema_backfill_duration_seconds{state}`: how long a backfill Job took, from its
  creation to its end (`Succeeded` or `Failed`), observed when the operator sees it end.

The two gauges are computed at scrape time from what the passes last saw, so they never
show a half-updated state. `GET /readyz` answers 200 once the operator has started (its
settings applied, the Kubernetes client loaded, its peering object ensured), 503 before
that and once it stops.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vectorschema.api import NamespaceStatus
from vectorschema.controller.metering import (
    NamespaceState,
    backfill_durations,
    namespace_state,
    pass_result,
    points_deleted,
)
from vectorschema.controller.results import Result

Key = tuple[str, str]


class Metrics:
    """The operator's series, in a registry of their own; also the `Recorder` that
    `controller.metering.MeteredGateway` reports Qdrant calls to."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` twins
        self.registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self.registry)
        self.reconciles = Counter(
            "vectorschema_reconcile_total",
            "Reconcile passes, by how they ended.",
            ["result"],
            registry=self.registry,
        )
        self.reconcile_seconds = Histogram(
            "vectorschema_reconcile_duration_seconds",
            "Duration of a reconcile pass.",
            registry=self.registry,
        )
        self.destructive = Counter(
            "vectorschema_destructive_operations_total",
            "Qdrant calls that destroyed stored data, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.points = Counter(
            "vectorschema_points_deleted_total",
            "Points deleted by reconfigures (recreating a collection).",
            registry=self.registry,
        )
        self.qdrant_requests = Counter(
            "vectorschema_qdrant_requests_total",
            "Qdrant calls, by server origin and outcome.",
            ["server", "outcome"],
            registry=self.registry,
        )
        self.qdrant_seconds = Histogram(
            "vectorschema_qdrant_request_duration_seconds",
            "Duration of a Qdrant call.",
            registry=self.registry,
        )
        self.backfill_seconds = Histogram(
            "vectorschema_backfill_duration_seconds",
            "Duration of a backfill Job, from its creation to its end, by how it ended.",
            ["state"],
            buckets=(10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, float("inf")),
            registry=self.registry,
        )
        for ended in ("Succeeded", "Failed"):  # both series exist from the start
            self.backfill_seconds.labels(state=ended)
        self._states: dict[Key, NamespaceState] = {}
        self._statuses: dict[Key, NamespaceStatus] = {}
        self._lock = threading.Lock()
        self.registry.register(_StateCollector(self.snapshot))

    # --- passes and resources ---------------------------------------------------------

    def observe_pass(self, key: Key, result: Result | None, seconds: float) -> None:
        self.reconciles.labels(result=pass_result(result)).inc()
        self.reconcile_seconds.observe(seconds)
        if result is None:
            self.forget(key)
            return
        state = namespace_state(result.status)
        if state is None:
            return
        with self._lock:
            deleted = points_deleted(self._statuses.get(key), result.status)
            durations = backfill_durations(self._statuses.get(key), result.status)
            self._states[key] = state
            self._statuses[key] = _compared(result.status)
        if deleted:
            self.points.inc(deleted)
        for ended, seconds in durations:
            self.backfill_seconds.labels(state=ended).observe(seconds)

    def observe_error(self, seconds: float) -> None:
        self.reconciles.labels(result="error").inc()
        self.reconcile_seconds.observe(seconds)

    def forget(self, key: Key) -> None:
        with self._lock:
            self._states.pop(key, None)
            self._statuses.pop(key, None)

    def snapshot(self) -> list[NamespaceState]:
        with self._lock:
            return list(self._states.values())

    # --- controller.metering.Recorder -------------------------------------------------

    def qdrant_request(self, server: str, outcome: str, seconds: float) -> None:
        self.qdrant_requests.labels(server=server, outcome=outcome).inc()
        self.qdrant_seconds.observe(seconds)

    def destructive_operation(self, kind: str) -> None:
        self.destructive.labels(kind=kind).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], list[NamespaceState]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        states = self._snapshot()
        namespaces = GaugeMetricFamily(
            "vectorschema_namespaces",
            "Namespace resources served, by the status and reason of their Ready condition.",
            labels=["ready", "reason"],
        )
        for (ready, reason), count in sorted(Tally((s.ready, s.reason) for s in states).items()):
            namespaces.add_metric([ready, reason], count)
        yield namespaces
        yield GaugeMetricFamily(
            "vectorschema_plans_awaiting_approval",
            "Namespace resources whose destructive plan waits for approval.",
            value=sum(s.awaiting_approval for s in states),
        )
        jobs = GaugeMetricFamily(
            "vectorschema_backfill_jobs",
            "Backfill pairs (collection x plugin) of the Namespace resources served, by state.",
            labels=["state"],
        )
        tally = Tally(state for s in states for state in s.backfill)
        for state in ("Pending", "Running", "Succeeded", "Failed", "Manual"):
            jobs.add_metric([state], tally.get(state, 0))
        yield jobs


class Server:
    """`/metrics` and `/readyz` on one port (aiohttp, which kopf already runs on)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.ready = False
        self._runner: web.AppRunner | None = None

    async def start(self, port: int, host: str = "0.0.0.0") -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        self.ready = False
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, _: web.Request) -> web.Response:
        body = self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _readyz(self, _: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready\n")


def _compared(status: NamespaceStatus) -> NamespaceStatus:
    """What the next pass's status is compared with (`points_deleted`: the last
    reconfigure; `backfill_durations`: the backfill pairs), and nothing else: one kept per
    Namespace, the conditions and the rest would only take memory (about 4 KB each)."""
    return NamespaceStatus.model_construct(
        last_reconfigure=status.last_reconfigure, reprocess=status.reprocess
    )
