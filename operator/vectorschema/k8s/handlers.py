"""kopf handlers: decorated functions only, each delegating to unit-tested code.

Run with `kopf run -m vectorschema.k8s.handlers --all-namespaces` (add `--standalone`
for a single replica, or `--peering=vectorschema` for several).

Each Namespace resource within its Kubernetes namespace's cap has one control loop (a
kopf daemon, `wakeups.control_loop`; one beyond the cap has none, see `_served`)
that reconciles it (`controller.passes.run_pass`) whenever something it depends on
changes, and on a jittered interval to catch drift in Qdrant:
- its own spec or annotations changed (`on.event` for Namespaces wakes the loop),
- a Plugin it lists changed (a kopf index maps plugin names to Namespaces),
- the Secret holding its Qdrant API key changed (an index maps Secrets to Namespaces; only
  Secrets with the admin's label are watched; an API key is read, one key at a time, when
  a pass needs it, and kept in `connection.SecretCache` until its Secret changes),
- the resync interval passed (`VECTORSCHEMA_RESYNC_SECONDS`, default 60, +-10% jitter).
Sharded (`VECTORSCHEMA_SHARD_INDEX`/`_COUNT`), the Namespace handlers see only this
shard's objects (filters delegating to `core.sharding`), the finalizer is the shard's, and
nothing acts while another shard layout holds the layout lease (`k8s.sharding.Gate`).
Indexes and event handlers are `async def`: kopf runs a plain `def` handler in a thread of
its executor (a thread hop per handler per event), and the wake-ups set asyncio Events,
which only the event loop's thread may set.
Scope: kopf serves the namespaces it is told (`--all-namespaces` or `--namespace`
patterns); every Namespace handler also filters by the labels of the Kubernetes namespace
(`VECTORSCHEMA_NAMESPACE_SELECTOR`, an index of core Namespaces' labels) and, only with
the admin's opt-in, by the resource's own (`_in_scope`, `core.scope.Scope`), so two
installations can split a cluster by namespaces or by the labels admins set.
One loop per resource, and a per-resource lock (`controller.locks`, in kopf's `memo`)
held by every pass and by the finaliser, mean reconciles of one resource never overlap,
not even with a pass a cancelled daemon left running in its thread. Status changes written
by the loop do not wake it (only generation and annotations do), and a status is written
only when it differs, so a resync of an unchanged world writes nothing. The per-operator
state (`wakeups.Wakeups`, the locks) lives in kopf's `memo`.

With `VECTORSCHEMA_WEBHOOK_PORT` set, the operator also serves a validating admission
webhook for Namespace creates and updates (`admission.review`): it refuses what the
cross-object checks and the admin's caps forbid and tells kubectl the plan as warnings; it
never writes, reads no Secret, and plans only against what the operator observed.

Per tenant (Kubernetes namespace): a share of the worker threads (`controller.shares`)
and of each Qdrant server's call slots (`qdrant.limits.TENANT`), and the admin's caps
(`core.caps`); everything kept per resource is dropped on its DELETED event (`forget`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import heapq
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kopf

from vectorschema.api import (
    BACKFILL_LABEL,
    GROUP,
    NAMESPACE_PLURAL,
    PLUGIN_PLURAL,
    VERSION,
    NamespaceResource,
    NamespaceStatus,
    ReprocessState,
)
from vectorschema.controller import backfill as backfills
from vectorschema.controller.backoff import RetryKind
from vectorschema.controller.errors import ConnectionRefused
from vectorschema.controller.locks import ResourceLocks
from vectorschema.controller.passes import marked_over_cap, run_pass, valid_plugins
from vectorschema.controller.plugin_status import plugin_status_patch
from vectorschema.controller.reconcile import POINTS_AT_RISK, Connector
from vectorschema.controller.results import Event, Observations, Result
from vectorschema.controller.shares import TenantShares
from vectorschema.core import sharding as shards
from vectorschema.core.backfill import job_state
from vectorschema.core.caps import Caps, Ranks
from vectorschema.core.scope import Scope
from vectorschema.k8s import admission, kube, logs, sharding, wakeups
from vectorschema.k8s import settings as config
from vectorschema.k8s.connection import (
    SecretCache,
    checked_url,
    connection_id,
    connectors,
    default_from_env,
    metered,
)
from vectorschema.k8s.events import post_event
from vectorschema.k8s.metrics import Metrics, Server
from vectorschema.k8s.release import release as release_collection
from vectorschema.qdrant import pool
from vectorschema.qdrant.limits import TENANT

Key = wakeups.Key
log = logging.getLogger("vectorschema")


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Refuse a per-Pod embedded store; kopf's settings, the per-operator state (wake-ups,
    locks, the worker threads), Qdrant's limits and its recovery wake-ups, the Kubernetes
    client, the webhook's registration (when it serves one and registers itself), the
    shard, the peering object, metrics and readiness."""
    refusal = config.embedded_store_refusal()
    if refusal is not None:
        raise kopf.PermanentError(refusal)
    gc_tuning = config.gc_tuning()
    memo.executor = ThreadPoolExecutor(config.workers(), thread_name_prefix="vectorschema")
    pool.configure(config.qdrant_limits())
    _wake_on_recovery(memo, asyncio.get_running_loop())
    # API callers at once: the worker threads, and asyncio's default pool (to_thread)
    kube.load_config(threads=config.workers() + min(32, (os.cpu_count() or 1) + 4))
    webhook = config.webhook_settings()
    ca = config.configure_kopf(settings, webhook)
    logs.install()
    memo.wakeups = wakeups.Wakeups()
    memo.scope = config.scope()
    memo.metrics = Metrics()
    memo.server = Server(memo.metrics)
    memo.locks = ResourceLocks()
    memo.secrets = SecretCache()
    memo.observations = Observations()
    memo.ranks = Ranks()
    memo.shares = TenantShares(config.workers_per_tenant())
    total, per_namespace = config.backfill_caps()
    memo.slots = backfills.Slots(backfills.Caps(total=total, per_namespace=per_namespace))
    memo.webhook = webhook
    if ca is not None:
        name = admission.register(webhook, ca)
        where = f"{webhook.host}:{webhook.port}"
        logger.info(
            f"admission webhook on {where}"
            + (f", registered as ValidatingWebhookConfiguration {name}" if name else "")
            + (
                f"; callers must present a client certificate of {webhook.client_ca}"
                if webhook.client_ca is not None
                else "; callers are not authenticated (VECTORSCHEMA_WEBHOOK_CLIENT_CA unset)"
            )
        )
    shard = sharding.config_from_env()
    settings.persistence.finalizer = shards.finalizer_for(shard.index)
    lease = shards.LayoutLease(shard.layout, sharding.lease_seconds()) if shard.leased else None
    memo.gate = sharding.Gate(shard, lease)
    if settings.peering.mandatory and not settings.peering.standalone and config.ensure_peering():
        done = await asyncio.to_thread(kube.ensure_peering, settings.peering.name)
        log.info("ClusterKopfPeering %s: %s", settings.peering.name, done)
    port = config.metrics_port()
    if port is not None:
        await memo.server.start(port)
    if gc_tuning:
        tune_gc()
    memo.server.ready = True


#: The cyclic garbage collector's thresholds (Python's default: 700, 10, 10).
GC_THRESHOLDS = (10_000, 10, 10)


def tune_gc() -> None:
    """Once started (unless `VECTORSCHEMA_GC_TUNING=false`): the garbage made so far is
    collected, what the imports and the settings made is frozen out of the cyclic garbage
    collector's sight (`gc.freeze`: every full collection traversed it again), and the
    young generation is collected every 10,000 tracked allocations instead of 700
    (reference counting frees almost everything a pass makes; the collector is only for
    cycles). Measured with `bench_hooks`' timing of each collection: untuned at 10,000
    Namespaces, 47 s of the operator's 151 s of CPU (34 s in 47 full collections); tuned
    on a slower day, 63 of 398 s (13 s in 7 full collections); at 3,000, 8.9 -> 3.7 s. The
    objects of each Namespace are made after start-up, so freezing does not reach them:
    the gain is fewer collections, and full ones that skip what start-up made."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _wake_on_recovery(memo: kopf.Memo, loop: asyncio.AbstractEventLoop) -> None:
    """When a Qdrant server answers again (its breaker closes, in a worker thread), wake
    the Namespaces that found it unavailable, spread over the recovery window."""
    spread = config.recovery_spread()

    def recovered(location: str) -> None:
        loop.call_soon_threadsafe(memo.wakeups.recovered, location, spread)

    pool.on_recovery(recovered)


@kopf.on.startup()
async def start_shard_lease(memo: kopf.Memo, **_: Any) -> None:
    """A sharded operator keeps its layout's lease in a background task. Nothing when
    `configure` failed (it says why; this must not add a second, confusing error)."""
    gate: sharding.Gate | None = getattr(memo, "gate", None)
    if gate is not None and gate.lease is not None:
        memo.lease_task = asyncio.create_task(
            sharding.run_lease(gate, sharding.lease_namespace(), sharding.lease_name())
        )


@kopf.on.cleanup()
async def stop_shard_lease(memo: kopf.Memo, **_: Any) -> None:
    task: asyncio.Task[None] | None = getattr(memo, "lease_task", None)
    if task is not None:
        task.cancel()


@kopf.on.cleanup()
async def stop_serving(memo: kopf.Memo, **_: Any) -> None:
    """Not ready any more; close the metrics port (if `configure` got that far)."""
    server: Server | None = getattr(memo, "server", None)
    if server is not None:
        await server.stop()


@kopf.on.cleanup()
def shut_down(memo: kopf.Memo, **_: Any) -> None:
    """Let the worker threads go, and close every Qdrant client."""
    executor = getattr(memo, "executor", None)
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
    pool.close_all()


async def _in_worker(memo: kopf.Memo, tenant: str, fn: functools.partial[Any]) -> Any:
    """Run blocking work for `tenant` (a Kubernetes namespace) on the operator's own
    threads (not asyncio's small default pool: a hung server must not starve the
    Namespaces of the others), within the tenant's share of them (`controller.shares`),
    in this task's context (the log record's object reference, the tenant its Qdrant
    calls are counted against), as `asyncio.to_thread` would."""
    shares: TenantShares = memo.shares
    async with shares.hold(tenant):
        token = TENANT.set(tenant)
        try:
            context = contextvars.copy_context()
        finally:
            TENANT.reset(token)
        return await asyncio.get_running_loop().run_in_executor(
            memo.executor, functools.partial(context.run, fn)
        )


@kopf.index("", "v1", "namespaces")
async def namespace_labels(name: str, labels: kopf.Labels, **_: Any) -> dict[str, dict[str, str]]:
    """Kubernetes namespace -> its labels (set by the cluster's admins): the scope."""
    return {name: dict(labels)}


def _in_scope(
    namespace: str,
    labels: Mapping[str, str],
    memo: kopf.Memo,
    index: kopf.Index[str, dict[str, str]],
    *,
    unknown: bool = False,
) -> bool:
    """The Namespace resource is in this installation's scope (`core.scope.Scope`): its
    Kubernetes namespace's labels match, and (opted in) its own. A namespace not listed
    yet counts as `unknown` says."""
    scope: Scope = memo.scope
    store = index.get(namespace)
    known = next(iter(store), None) if store is not None else None
    if known is None and unknown:
        return scope.objects.matches(labels)
    return scope.matches(known, labels)


def _owned(
    meta: kopf.Meta,
    namespace: str,
    labels: kopf.Labels,
    memo: kopf.Memo,
    namespace_labels: kopf.Index[str, dict[str, str]],
    **_: Any,
) -> bool:
    """The Namespace resources this operator reconciles: in its scope, and this shard's
    (all of them when unsharded)."""
    gate: sharding.Gate = memo.gate
    return _in_scope(namespace, labels, memo, namespace_labels) and shards.owns(
        gate.config, meta.get("uid")
    )


def _indexed(
    meta: kopf.Meta,
    namespace: str,
    labels: kopf.Labels,
    memo: kopf.Memo,
    namespace_labels: kopf.Index[str, dict[str, str]],
    **_: Any,
) -> bool:
    """`_owned`, for the indices that wake (or count) resources: they fill while the
    Kubernetes namespaces are still being listed, so a namespace not listed yet counts
    as in scope (a wake-up of a resource out of scope finds no loop: a no-op)."""
    gate: sharding.Gate = memo.gate
    return _in_scope(namespace, labels, memo, namespace_labels, unknown=True) and shards.owns(
        gate.config, meta.get("uid")
    )


def _released_here(
    meta: kopf.Meta,
    namespace: str,
    labels: kopf.Labels,
    memo: kopf.Memo,
    namespace_labels: kopf.Index[str, dict[str, str]],
    **_: Any,
) -> bool:
    """The Namespace resources whose deletion this shard handles (see core.sharding), in
    this installation's scope."""
    gate: sharding.Gate = memo.gate
    return _in_scope(namespace, labels, memo, namespace_labels) and shards.handles_deletion(
        gate.config, meta.get("uid"), meta.get("finalizers", [])
    )


def _metered(
    memo: kopf.Memo, connector_for: Callable[[NamespaceResource], Connector]
) -> Callable[[NamespaceResource], Connector]:
    """``connector_for``, with every Qdrant call counted in this operator's metrics."""
    return lambda resource: metered(resource, connector_for(resource), memo.metrics)


@kopf.index(GROUP, VERSION, PLUGIN_PLURAL)
async def plugin_specs(name: str, spec: kopf.Spec, **_: Any) -> dict[str, dict[str, Any]]:
    """Plugin name -> spec, for resolving a Namespace's plugins without an API call."""
    return {name: dict(spec)}


@kopf.on.validate(  # type: ignore[arg-type]
    GROUP,
    VERSION,
    NAMESPACE_PLURAL,
    id=admission.WEBHOOK_ID,
    operations=["CREATE", "UPDATE"],
    persistent=True,
    side_effects=False,
    ignore_failures=True,
)
async def plan_at_admission(
    body: kopf.Body,
    old: kopf.Body | None,
    warnings: list[str],
    memo: kopf.Memo,
    plugin_specs: kopf.Index[str, dict[str, Any]],
    namespace_labels: kopf.Index[str, dict[str, str]],
    namespace_uids: kopf.Index[Key, str],
    namespaces_by_kube_namespace: kopf.Index[str, tuple[str, str]] | None = None,
    **_: Any,
) -> None:
    """Tell kubectl the plan (warnings); refuse what the cross-object checks forbid. It
    reads no Secret and never connects with a tenant's connection: it plans against what
    the operator observed of this very object, or (only when the API server is
    authenticated as the caller) the operator's own default connection.

    Outside this installation's scope it says nothing (another installation's policy and
    caps judge those). An unauthenticated review costs no API request: the Plugins and the
    live object's UID come from kopf's indexes (a forged review costs the operator's
    identity nothing). An authenticated one (mTLS) reads them from the API server, so that
    a standby replica, whose watches peering pauses, plans as well."""
    meta = body.get("metadata") or {}
    if not _in_scope(meta.get("namespace") or "", meta.get("labels") or {}, memo, namespace_labels):
        return
    webhook: config.WebhookSettings = memo.webhook
    observations: Observations = memo.observations
    authenticated = webhook.client_ca is not None
    index = namespaces_by_kube_namespace if authenticated else None
    read_plugins: admission.PluginReader
    read_uid: admission.LiveReader
    if authenticated:
        # The API server is proven to be the caller, so no review is forged: read the
        # Plugins and the live UID from it (in the reader thread). A standby replica must
        # plan too, and peering pauses its watches, so its indexes are empty or stale.
        read_plugins = lambda: valid_plugins(kube.list_plugin_specs())  # noqa: E731
        read_uid = kube.namespace_uid
    else:
        plugins = valid_plugins(plugin_specs)  # a copy, taken on the event loop
        key = (meta.get("namespace") or "", meta.get("name") or "")
        store = namespace_uids.get(key)
        live_uid = next(iter(store), None) if store is not None else None
        read_plugins = lambda: plugins  # noqa: E731
        read_uid = lambda ns, name: live_uid if (ns, name) == key else None  # noqa: E731
    answer = await admission.review(
        dict(body),
        dict(old) if old is not None else None,
        read_plugins,
        policy=config.policy(),
        caps=config.caps(),
        plan_seconds=webhook.plan_seconds,
        read_uid=read_uid,
        observed=observations.get,
        default_connection=default_from_env if authenticated else None,
        connection_of=connection_id,
        served=(lambda ns: len(index.get(ns, []))) if index is not None else None,
        authenticated=authenticated,
    )
    warnings.extend(answer.warnings)
    if answer.refusal is not None:
        raise kopf.AdmissionError(answer.refusal, code=422)


def _in_scope_or_unknown(
    namespace: str,
    labels: kopf.Labels,
    memo: kopf.Memo,
    namespace_labels: kopf.Index[str, dict[str, str]],
    **_: Any,
) -> bool:
    """In this installation's scope (any shard), or in a namespace not listed yet."""
    return _in_scope(namespace, labels, memo, namespace_labels, unknown=True)


@kopf.index(GROUP, VERSION, NAMESPACE_PLURAL, when=_in_scope_or_unknown)  # type: ignore[arg-type]
async def namespace_uids(namespace: str, name: str, meta: kopf.Meta, **_: Any) -> dict[Key, str]:
    """(namespace, name) -> metadata.uid: the webhook vouches for an UPDATE with it (the
    live object's UID, as kopf last saw it) without asking the API server."""
    uid = meta.get("uid")
    return {(namespace, name): str(uid)} if uid else {}


@kopf.index(GROUP, VERSION, NAMESPACE_PLURAL, when=_indexed)  # type: ignore[arg-type]
async def namespaces_by_plugin(
    namespace: str, name: str, spec: kopf.Spec, **_: Any
) -> dict[str, Key]:
    """Plugin name -> the Namespace resources that list it (to wake them on change)."""
    return {p["name"]: (namespace, name) for p in spec.get("plugins", []) if "name" in p}


@kopf.index(GROUP, VERSION, NAMESPACE_PLURAL, when=_indexed)  # type: ignore[arg-type]
async def namespaces_by_secret(
    namespace: str, name: str, spec: kopf.Spec, **_: Any
) -> dict[Key, Key]:
    """(namespace, Secret name) -> the Namespace resources whose API key it holds."""
    ref = (spec.get("qdrant") or {}).get("apiKeySecretRef") or {}
    return {(namespace, ref["name"]): (namespace, name)} if "name" in ref else {}


@kopf.index(GROUP, VERSION, NAMESPACE_PLURAL, when=_indexed)  # type: ignore[arg-type]
async def namespaces_by_kube_namespace(
    namespace: str, name: str, meta: kopf.Meta, **_: Any
) -> dict[str, tuple[str, str]]:
    """Kubernetes namespace -> (creationTimestamp, name) of its Namespace resources: the
    oldest `VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE` are served."""
    return {namespace: (str(meta.get("creationTimestamp") or ""), name)}


def over_cap(
    namespace: str,
    name: str,
    index: kopf.Index[str, tuple[str, str]],
    caps: Caps,
    ranks: Ranks | None = None,
) -> str | None:
    """Why this resource is beyond its Kubernetes namespace's cap (None: it is not).
    Runs on the event loop: with `ranks` (the operator's, in kopf's memo), a namespace's
    entries are sorted once while their number holds, not once per check."""
    store = index.get(namespace)
    if store is None or len(store) <= caps.namespaces:
        return None  # the usual case, without looking at the entries
    rank, total = (ranks if ranks is not None else Ranks()).rank(namespace, name, store)
    refused = caps.namespaces_refusal(namespace, rank, total)
    return refused.message if refused is not None else None


def _served(
    meta: kopf.Meta,
    namespace: str,
    name: str,
    labels: kopf.Labels,
    memo: kopf.Memo,
    namespace_labels: kopf.Index[str, dict[str, str]],
    namespaces_by_kube_namespace: kopf.Index[str, tuple[str, str]],
    **_: Any,
) -> bool:
    """`_owned`, and within its Kubernetes namespace's cap: only these get a control loop
    (a daemon, its resyncs and reads). One beyond the cap gets its Stalled/LimitExceeded
    status once, from `namespace_event`, and a loop when an older one goes."""
    return _owned(meta, namespace, labels, memo, namespace_labels) and (
        over_cap(namespace, name, namespaces_by_kube_namespace, config.caps(), memo.ranks) is None
    )


#: Set on the oldest resource beyond a Kubernetes namespace's cap when a served one goes:
#: its watch event lets kopf start its control loop (the `_served` filter holds now).
SERVED_ANNOTATION = f"{GROUP}/served"


@kopf.on.event(GROUP, VERSION, NAMESPACE_PLURAL, when=_owned)  # type: ignore[arg-type]
async def namespace_event(
    event: kopf.RawEvent,
    namespace: str,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    namespaces_by_kube_namespace: kopf.Index[str, tuple[str, str]],
    **_: Any,
) -> None:
    """Wake the control loop when the spec (generation) or the approval annotation
    changes; when the resource is gone, drop everything kept about it (and let the next
    one in line past the cap be served). A resource beyond the cap has no loop: its
    status says so, written once per generation from the body kopf has (no read)."""
    drop_managed_fields(event)
    memo.wakeups.namespace_event((namespace, name), event.get("type"), body)
    if event.get("type") == "DELETED":
        forget(memo, (namespace, name))
        memo.ranks.forget(namespace)
        await _serve_next(namespace, body, namespaces_by_kube_namespace)
        return
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    caps = config.caps()
    refused = over_cap(namespace, name, namespaces_by_kube_namespace, caps, memo.ranks)
    if refused is not None and not marked_over_cap(body):
        await _in_worker(
            memo,
            namespace,
            functools.partial(
                run_pass,
                kube.LiveNamespaces(body),
                namespace,
                name,
                {},
                _never_connect,
                locks=memo.locks,
                caps=caps,
                over_cap=refused,
            ),
        )


def drop_managed_fields(event: kopf.RawEvent) -> None:
    """Drop `metadata.managedFields` (the API server's field ownership records, read by
    nothing here) from the event's object. That object is the body kopf keeps for the
    resource until its next event (its daemon's live `body`: kopf calls the event handlers
    before it hands the body to the daemons), and the records are about 60% of a parsed
    Namespace (11.7 of 19.7 KB for one with a status): 10,000 Namespaces kept over 100 MB
    of them."""
    obj: Any = event.get("object")  # the raw dict kopf keeps (its TypedDict omits the field)
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if isinstance(meta, dict):
        meta.pop("managedFields", None)


def _never_connect(resource: NamespaceResource) -> Connector:
    raise AssertionError("a resource beyond the cap is never connected")  # pragma: no cover


async def _serve_next(
    namespace: str, gone: kopf.Body, index: kopf.Index[str, tuple[str, str]]
) -> None:
    """A resource of `namespace` went: if it was served, the oldest one still beyond the
    cap is served now; touch it so that kopf starts its control loop."""
    caps = config.caps()
    meta = gone.get("metadata", {})
    was = (str(meta.get("creationTimestamp") or ""), str(meta.get("name")))
    store = index.get(namespace)
    if store is None or len(store) < caps.namespaces:
        return  # nobody waits (without looking at the entries)
    # the oldest cap+1 of the others, listed still or not: O(n log cap), not a sort
    entries = heapq.nsmallest(caps.namespaces, (e for e in store if e != was))
    if len(entries) < caps.namespaces or entries[-1] < was:
        return  # nobody waits, or it was beyond the cap itself: nothing moves up
    _, name = entries[-1]
    stamp = datetime.now(UTC).isoformat()
    try:
        await asyncio.to_thread(kube.set_annotation, namespace, name, SERVED_ANNOTATION, stamp)
    except Exception as exc:  # it went too, or the API server is away: its next event will do
        log.warning("%s/%s: cannot mark it served: %s", namespace, name, exc)


def forget(memo: kopf.Memo, key: Key) -> None:
    """The resource is gone: no per-resource structure outlives it (locks, released
    UIDs, observations, metrics series, wake-up and backoff state, its pooled client)."""
    memo.wakeups.forget(key)
    memo.locks.forget(key)
    unobserve(memo, key)
    memo.metrics.forget(key)
    pool.release(key)


def unobserve(memo: kopf.Memo, key: Key) -> None:
    """Drop what the passes observed of `key` (and the counts of its collection's plans):
    its loop stopped (gone, being deleted, out of scope)."""
    seen = memo.observations.get(key)
    if seen is not None:
        POINTS_AT_RISK.forget_collection(seen.collection)
    memo.observations.forget(key)


@kopf.on.event(GROUP, VERSION, PLUGIN_PLURAL)  # type: ignore[arg-type]
async def plugin_event(
    event: kopf.RawEvent,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    namespaces_by_plugin: kopf.Index[str, Key],
    **_: Any,
) -> None:
    """A Plugin changed: keep its status and wake every Namespace that lists it."""
    if memo.wakeups.plugin_event(name, event.get("type"), body):
        for key in namespaces_by_plugin.get(name, []):
            memo.wakeups.wake(key, "plugin")
    gate: sharding.Gate = memo.gate
    if event.get("type") != "DELETED" and gate.config.index == 0 and gate.active():
        patch = plugin_status_patch(dict(body), datetime.now(UTC))
        if patch is not None:
            await asyncio.to_thread(kube.patch_plugin_status, name, patch)


def _is_referenced(
    namespace: str, name: str, namespaces_by_secret: kopf.Index[Key, Key], **_: Any
) -> bool:
    return (namespace, name) in namespaces_by_secret


@kopf.on.event("", "v1", "secrets", when=_is_referenced)  # type: ignore[arg-type]
async def secret_event(
    namespace: str,
    name: str,
    memo: kopf.Memo,
    namespaces_by_secret: kopf.Index[Key, Key],
    **_: Any,
) -> None:
    """A Secret changed (e.g. a rotated API key): forget what was read of it, and wake
    the Namespaces that use it."""
    secrets: SecretCache = memo.secrets
    secrets.invalidate(namespace, name)
    for key in namespaces_by_secret.get((namespace, name), []):
        memo.wakeups.wake(key, "secret")


@kopf.index(*config.JOBS, labels={BACKFILL_LABEL: "true"})  # type: ignore[arg-type]
async def backfill_jobs(
    namespace: str, name: str, status: kopf.Status, **_: Any
) -> dict[str, str] | None:
    """Kubernetes namespace -> its backfill Jobs still running: the admin's caps count
    them (kopf fills every index before other handlers start, so the count is right from
    the first pass after a restart)."""
    if job_state(status) is ReprocessState.RUNNING:
        return {namespace: name}
    return None


@kopf.on.event(*config.JOBS, labels={BACKFILL_LABEL: "true"})  # type: ignore[arg-type]
async def job_event(
    event: kopf.RawEvent,
    namespace: str,
    body: kopf.Body,
    status: kopf.Status,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """A backfill Job changed: wake the Namespace that owns it (and, when one ended, the
    Namespaces whose Jobs wait for a slot)."""
    ended = event.get("type") == "DELETED" or job_state(status) is not ReprocessState.RUNNING
    memo.wakeups.job_event(namespace, body, ended)


def _backfill(memo: kopf.Memo, backfill_jobs: kopf.Index[str, str]) -> backfills.Backfill:
    """The backfill of a pass: the Jobs API, the caps, and the running Jobs now (a copy of
    the index, taken on the event loop)."""
    active = {ns: set(backfill_jobs[ns]) for ns in backfill_jobs}
    return backfills.Backfill(
        store=kube.Jobs(),
        slots=memo.slots,
        active=lambda: active,
        qdrant_url=_pod_qdrant_url,
    )


def _pod_qdrant_url(resource: NamespaceResource) -> str | None:
    """QDRANT_URL of a backfill Pod: the Namespace's own URL only when the admin allows it."""
    conn = resource.spec.qdrant
    url = None
    if conn is not None and conn.url is not None:
        try:
            url = checked_url(conn.url, config.policy())
        except ConnectionRefused:
            return None
    return config.backfill_qdrant_url(url)


@kopf.daemon(  # type: ignore[arg-type]
    GROUP,
    VERSION,
    NAMESPACE_PLURAL,
    cancellation_backoff=2.0,
    cancellation_timeout=30.0,
    when=_served,  # type: ignore[arg-type]
)
async def control_loop(
    namespace: str,
    name: str,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    plugin_specs: kopf.Index[str, dict[str, Any]],
    namespaces_by_kube_namespace: kopf.Index[str, tuple[str, str]],
    namespace_labels: kopf.Index[str, dict[str, str]],
    backfill_jobs: kopf.Index[str, str],
    **_: Any,
) -> None:
    """Reconcile this Namespace now, on every wake-up, and on the resync interval."""

    gate: sharding.Gate = memo.gate
    logs.set_current(logs.namespace_ref(namespace, name, body.get("metadata", {}).get("uid")))
    replaced: list[str] = []  # versions this loop's writes replaced (see LiveNamespaces)

    async def one_pass() -> Result | None:
        while not await gate.wait_active(1.0):  # another shard layout still acts
            if stopped:
                return Result(status=NamespaceStatus(), retry=RetryKind.CONFLICT)
        if not _in_scope(
            namespace,
            body.get("metadata", {}).get("labels") or {},
            memo,
            namespace_labels,
        ):
            # Its Kubernetes namespace left the scope since the loop started: nothing is
            # done until it is back (the loop goes when kopf next sees the resource).
            return Result(status=NamespaceStatus())
        started = time.monotonic()
        caps = config.caps()
        policy = config.policy()
        try:
            result: Result | None = await _in_worker(
                memo,
                namespace,
                functools.partial(
                    run_pass,
                    kube.LiveNamespaces(body, replaced),
                    namespace,
                    name,
                    valid_plugins(plugin_specs),
                    _metered(memo, connectors(policy, memo.secrets, caps)),
                    locks=memo.locks,
                    policy=policy,
                    connection_of=connection_id,
                    caps=caps,
                    over_cap=over_cap(
                        namespace, name, namespaces_by_kube_namespace, caps, memo.ranks
                    ),
                    backfill=_backfill(memo, backfill_jobs),
                ),
            )
        except Exception:
            memo.metrics.observe_error(time.monotonic() - started)
            raise
        memo.metrics.observe_pass((namespace, name), result, time.monotonic() - started)
        if result is not None and result.observation is not None:
            memo.observations.put((namespace, name), result.observation)
        if result is not None and any(
            e.state is ReprocessState.PENDING for e in result.status.reprocess or []
        ):
            memo.wakeups.backfill_waiting.add((namespace, name))
        else:
            memo.wakeups.backfill_waiting.discard((namespace, name))
        return result

    def post(event: Event) -> None:
        post_event(body, event)

    try:
        await wakeups.control_loop(
            (namespace, name),
            memo.wakeups,
            stopped=stopped,
            deleting=lambda: bool(body.get("metadata", {}).get("deletionTimestamp")),
            run_pass=one_pass,
            post=post,
            resync=config.resync_interval,
        )
    finally:
        memo.metrics.forget((namespace, name))  # gone, or out of scope
        unobserve(memo, (namespace, name))


#: A net under `release`'s own bound (VECTORSCHEMA_DELETE_RETRIES, and every failure of
#: its own counted): whatever else fails in the handler, kopf gives up after this many
#: attempts and a permanently failed deletion handler still lets the resource go.
DELETE_HANDLER_ATTEMPTS = 50


@kopf.on.delete(  # type: ignore[arg-type]
    GROUP,
    VERSION,
    NAMESPACE_PLURAL,
    when=_released_here,  # type: ignore[arg-type]
    retries=DELETE_HANDLER_ATTEMPTS,
)
async def release(
    namespace: str,
    name: str,
    body: kopf.Body,
    retry: int,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Apply the deletion policy; never hold the resource forever."""
    gate: sharding.Gate = memo.gate
    while not await gate.wait_active(5.0):  # another shard layout still acts: not a retry
        pass
    with logs.about(logs.namespace_ref(namespace, name, body.get("metadata", {}).get("uid"))):
        event = await _in_worker(
            memo,
            namespace,
            functools.partial(
                release_collection,
                dict(body),
                retry,
                retries=config.delete_retries(),
                delay=config.delete_retry_delay(),
                connector_for=_metered(
                    memo, connectors(config.policy(), memo.secrets, config.caps())
                ),
                locks=memo.locks,
                policy=config.policy(),
            ),
        )
    pool.release((namespace, name))  # its client, if nobody else uses that key
    memo.metrics.forget((namespace, name))
    post_event(body, event)
