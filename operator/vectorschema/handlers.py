"""kopf handlers: thin glue between Kubernetes events and `reconcile`.

Run with `kopf run -m vectorschema.handlers --all-namespaces` (add `--standalone` for a
single replica, or `--peering=vectorschema` for several).

The operator is level-triggered. Each Namespace resource has one control loop (a kopf
daemon) that reconciles it whenever something it depends on changes, and on a jittered
interval to catch drift in Qdrant:
- its own spec or annotations changed (`on.event` for Namespaces wakes the loop),
- a Plugin it lists changed (a kopf index maps plugin names to Namespaces),
- the Secret holding its Qdrant API key changed (an index maps Secrets to Namespaces),
- the resync interval passed (`VECTORSCHEMA_RESYNC_SECONDS`, default 60, +-10% jitter).
One loop per resource means reconciles of one resource never overlap. Status changes
written by the loop do not wake it (only generation and annotations do), and a status is
written only when it differs, so a resync of an unchanged world writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from vectorschema import kube, reasons
from vectorschema.gateway import GatewayError, QdrantGateway, connect, default_from_env
from vectorschema.models import (
    CONFIRM_ANNOTATION,
    FINALIZER,
    GROUP,
    NAMESPACE_PLURAL,
    PLUGIN_PLURAL,
    VERSION,
    Condition,
    ConditionStatus,
    NamespaceResource,
    NamespaceStatus,
    PluginSpec,
    PluginStatus,
    timestamp,
)
from vectorschema.reconcile import (
    ConnectionUnavailable,
    Connector,
    Result,
    finalize,
    invalid_spec,
    reconcile,
)
from vectorschema.validation import describe

log = logging.getLogger("vectorschema")

Key = tuple[str, str]
_wakers: dict[Key, asyncio.Event] = {}
_seen: dict[Key, tuple[Any, ...]] = {}
#: Reconcile passes per Namespace, and wake-ups by cause, since start (observability).
passes: dict[Key, int] = {}
wakes: Counter[tuple[Key, str]] = Counter()


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw else default


#: Delay before re-running a pass whose status write hit a newer object version.
CONFLICT_RETRY = 0.5


def resync_interval() -> float:
    return _env_float("VECTORSCHEMA_RESYNC_SECONDS", 60.0)


def delete_retries() -> int:
    return int(_env_float("VECTORSCHEMA_DELETE_RETRIES", 5))


def delete_retry_delay() -> float:
    return _env_float("VECTORSCHEMA_DELETE_RETRY_DELAY", 10.0)


# --- configuration --------------------------------------------------------------------


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """All kopf settings in one place."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    logging.getLogger("kopf.objects").addFilter(_quiet_watchers)
    kube.load_config()


def _quiet_watchers(record: logging.LogRecord) -> bool:
    """Drop kopf's per-event "Handler 'x_event' succeeded" lines: the watchers only wake
    control loops, which log what they change."""
    message = record.getMessage()
    return not (message.startswith("Handler '") and "_event' succeeded" in message)


# --- indices --------------------------------------------------------------------------


@kopf.index(GROUP, VERSION, PLUGIN_PLURAL)
def plugin_specs(name: str, spec: kopf.Spec, **_: Any) -> dict[str, dict[str, Any]]:
    """Plugin name -> spec, for resolving a Namespace's plugins without an API call."""
    return {name: dict(spec)}


@kopf.index(GROUP, VERSION, NAMESPACE_PLURAL)  # type: ignore[arg-type]
def namespaces_by_plugin(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[str, Key]:
    """Plugin name -> the Namespace resources that list it (to wake them on change)."""
    return {p["name"]: (namespace, name) for p in spec.get("plugins", []) if "name" in p}


@kopf.index(GROUP, VERSION, NAMESPACE_PLURAL)  # type: ignore[arg-type]
def namespaces_by_secret(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[Key, Key]:
    """(namespace, Secret name) -> the Namespace resources whose API key it holds."""
    ref = (spec.get("qdrant") or {}).get("apiKeySecretRef") or {}
    return {(namespace, ref["name"]): (namespace, name)} if "name" in ref else {}


# --- wake-ups -------------------------------------------------------------------------


def _wake(key: Key, why: str) -> None:
    wakes[key, why] += 1
    waker = _wakers.get(key)
    if waker is not None:
        waker.set()


@kopf.on.event(GROUP, VERSION, NAMESPACE_PLURAL)  # type: ignore[arg-type]
def namespace_event(
    event: kopf.RawEvent, namespace: str, name: str, body: kopf.Body, **_: Any
) -> None:
    """Wake the control loop when the spec (generation) or the approval annotation changes.

    Status writes and kopf's own bookkeeping annotations do not wake it.
    """
    meta = body.get("metadata", {})
    seen = (meta.get("generation"), (meta.get("annotations") or {}).get(CONFIRM_ANNOTATION))
    key = (namespace, name)
    if _seen.get(key) != seen:
        _seen[key] = seen
        _wake(key, "spec")
    if event.get("type") == "DELETED":
        _seen.pop(key, None)


@kopf.on.event(GROUP, VERSION, PLUGIN_PLURAL)  # type: ignore[arg-type]
async def plugin_event(
    event: kopf.RawEvent,
    name: str,
    body: kopf.Body,
    namespaces_by_plugin: kopf.Index[str, Key],
    **_: Any,
) -> None:
    """A Plugin changed: keep its status and wake every Namespace that lists it."""
    for key in namespaces_by_plugin.get(name, []):
        _wake(key, "plugin")
    if event.get("type") != "DELETED":
        await asyncio.to_thread(_write_plugin_status, name, dict(body))


def _is_referenced(
    namespace: str, name: str, namespaces_by_secret: kopf.Index[Key, Key], **_: Any
) -> bool:
    return (namespace, name) in namespaces_by_secret


@kopf.on.event("", "v1", "secrets", when=_is_referenced)  # type: ignore[arg-type]
def secret_event(
    namespace: str, name: str, namespaces_by_secret: kopf.Index[Key, Key], **_: Any
) -> None:
    """A Secret changed (e.g. a rotated API key): wake the Namespaces that use it."""
    for key in namespaces_by_secret.get((namespace, name), []):
        _wake(key, "secret")


def _write_plugin_status(name: str, body: Mapping[str, Any]) -> None:
    old_raw = body.get("status") or {}
    generation = body.get("metadata", {}).get("generation")
    try:
        spec = PluginSpec.model_validate(body.get("spec") or {})
        status = ConditionStatus.TRUE
        reason, message, vectors = reasons.VALID, "", [v.name for v in spec.vectors]
    except ValidationError as exc:
        status, reason = ConditionStatus.FALSE, reasons.INVALID_SPEC
        message, vectors = describe(exc, "spec"), None
    old_ready: dict[str, Any] = next(
        (c for c in old_raw.get("conditions", []) if c.get("type") == "Ready"), {}
    )
    transition = (
        old_ready.get("lastTransitionTime")
        if old_ready.get("status") == status.value
        else timestamp(datetime.now(UTC))
    )
    new = PluginStatus(
        observed_generation=generation,
        conditions=[
            Condition(
                type="Ready",
                status=status,
                reason=reason,
                message=message,
                last_transition_time=transition or timestamp(datetime.now(UTC)),
                observed_generation=generation,
            )
        ],
        vectors=vectors,
    ).to_wire()
    if new != old_raw:
        kube.patch_plugin_status(name, _merge_patch(old_raw, new))


# --- the control loop -----------------------------------------------------------------


def _connector(resource: NamespaceResource) -> Connector:
    """How this Namespace reaches Qdrant: its own url/Secret, or the operator's default."""

    def connect_() -> QdrantGateway:
        conn = resource.spec.qdrant
        if conn is None or (conn.url is None and conn.api_key_secret_ref is None):
            return default_from_env()
        api_key = None
        if conn.api_key_secret_ref is not None:
            ref = conn.api_key_secret_ref
            try:
                api_key = kube.read_secret_key(resource.kube_namespace, ref.name, ref.key)
            except kube.SecretMissing as exc:
                raise ConnectionUnavailable(str(exc)) from None
        url = conn.url or os.environ.get("QDRANT_URL")
        if url is None:
            raise ConnectionUnavailable(
                "spec.qdrant.apiKeySecretRef is set but neither spec.qdrant.url nor "
                "QDRANT_URL is: an API key needs a Qdrant server"
            )
        return connect(url=url, api_key=api_key)

    return connect_


class StatusWriter:
    """Writes one Namespace's status: only what changed, only onto the version it read.

    The intent record is written with the resourceVersion of the object the pass started
    from: if anything changed since, it fails (Conflict) before any destructive Qdrant
    call, and the pass is re-run on fresh data. The final status reports what this pass
    did to Qdrant, which stays true whatever else changed: on a conflict it is re-applied
    onto a freshly read object.
    """

    def __init__(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        self.namespace, self.name = namespace, name
        self.written: dict[str, Any] = dict(body.get("status") or {})
        self.version: str | None = body.get("metadata", {}).get("resourceVersion")

    def intent(self, status: NamespaceStatus) -> None:
        self._write(status.to_wire())

    def final(self, status: NamespaceStatus, attempts: int = 3) -> None:
        new = status.to_wire()
        for attempt in range(attempts):
            try:
                self._write(new)
                return
            except kube.Conflict:
                if attempt == attempts - 1:
                    raise
                fresh = kube.get_namespace(self.namespace, self.name)
                self.written = dict(fresh.get("status") or {})
                self.version = fresh["metadata"]["resourceVersion"]

    def _write(self, new: dict[str, Any]) -> None:
        if new == self.written:
            return
        patch = _merge_patch(self.written, new)
        self.version = kube.patch_namespace_status(self.namespace, self.name, patch, self.version)
        self.written = new


def reconcile_once(namespace: str, name: str, plugins: Mapping[str, PluginSpec]) -> Result | None:
    """Read the object fresh, reconcile it, write what changed. Runs in a worker thread.

    None when the object is gone.
    """
    try:
        body = kube.get_namespace(namespace, name)
    except kube.NotFound:
        return None
    now = datetime.now(UTC)
    meta = body.get("metadata", {})
    if meta.get("deletionTimestamp"):
        return None
    writer = StatusWriter(namespace, name, body)
    try:
        resource = NamespaceResource.model_validate(
            {"metadata": meta, "spec": body.get("spec") or {}, "status": None}
        )
    except ValidationError as exc:
        result = invalid_spec(_parse_status(body), describe(exc), meta.get("generation"), now)
    else:
        resource = resource.model_copy(update={"status": _parse_status(body)})
        try:
            result = reconcile(
                resource, plugins, _connector(resource), now=now, write_intent=writer.intent
            )
        except kube.Conflict:
            # The object changed while this pass planned: nothing destructive ran.
            return Result(status=NamespaceStatus(), retry_after=CONFLICT_RETRY)
    old_ready = _parse_status(body).condition("Ready")
    writer.final(result.status)
    ready = result.status.condition("Ready")
    if ready is not None and (
        old_ready is None or (old_ready.status, old_ready.reason) != (ready.status, ready.reason)
    ):
        log.info(
            "%s/%s: Ready=%s/%s %s",
            namespace,
            name,
            ready.status.value,
            ready.reason,
            ready.message,
        )
    if result.remove_annotation:
        kube.set_annotation(namespace, name, CONFIRM_ANNOTATION, None)
    return result


def _parse_status(body: Mapping[str, Any]) -> NamespaceStatus:
    try:
        return NamespaceStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return NamespaceStatus()  # unreadable status (hand-edited): rebuild it


def _merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning `old` into `new` at the top level (None deletes)."""
    patch: dict[str, Any] = {k: None for k in old if k not in new}
    patch.update(new)
    return patch


def _plugins(plugin_specs: kopf.Index[str, dict[str, Any]]) -> dict[str, PluginSpec]:
    out: dict[str, PluginSpec] = {}
    for name, specs in plugin_specs.items():
        for raw in specs:
            try:
                out[name] = PluginSpec.model_validate(raw)
            except ValidationError:
                log.warning("plugin %s has an invalid spec; treated as missing", name)
    return out


@kopf.daemon(  # type: ignore[arg-type]
    GROUP, VERSION, NAMESPACE_PLURAL, cancellation_backoff=2.0, cancellation_timeout=30.0
)
async def control_loop(
    namespace: str,
    name: str,
    body: kopf.Body,
    stopped: kopf.DaemonStopped,
    plugin_specs: kopf.Index[str, dict[str, Any]],
    **_: Any,
) -> None:
    """Reconcile this Namespace now, on every wake-up, and on the resync interval."""
    key = (namespace, name)
    waker = _wakers.setdefault(key, asyncio.Event())
    try:
        while not stopped:
            waker.clear()
            if body.get("metadata", {}).get("deletionTimestamp"):
                return
            delay = 5.0  # after an unexpected error (e.g. an API hiccup): back off
            try:
                result = await asyncio.to_thread(
                    reconcile_once, namespace, name, _plugins(plugin_specs)
                )
            except Exception:
                log.exception("reconcile of %s/%s failed", namespace, name)
            else:
                if result is None:  # gone or being deleted
                    return
                passes[key] = passes.get(key, 0) + 1
                for ev in result.events:
                    kopf.event(body, type=ev.type, reason=ev.reason, message=ev.message)
                delay = (
                    result.retry_after
                    if result.retry_after is not None
                    else resync_interval() * random.uniform(0.9, 1.1)
                )
            await _sleep_until_woken(waker, stopped, delay)
    finally:
        if _wakers.get(key) is waker:
            del _wakers[key]


async def _sleep_until_woken(
    waker: asyncio.Event, stopped: kopf.DaemonStopped, delay: float
) -> None:
    deadline = time.monotonic() + delay
    while not stopped and not waker.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waker.wait(), timeout=min(remaining, 1.0))


# --- deletion -------------------------------------------------------------------------


@kopf.on.delete(GROUP, VERSION, NAMESPACE_PLURAL)
async def release(body: kopf.Body, retry: int, **_: Any) -> None:
    """Apply the deletion policy; never hold the resource forever.

    Qdrant unreachable or the Secret gone: retry a bounded number of times, then let the
    resource go with a Warning Event saying what may be left behind.
    """
    try:
        resource = NamespaceResource.model_validate(
            {"metadata": dict(body.get("metadata", {})), "spec": dict(body.get("spec") or {})}
        )
    except ValidationError as exc:
        kopf.warn(
            body,
            reason=reasons.EVENT_RELEASED_UNCLEAN,
            message=f"invalid spec, collection left as it is: {describe(exc)}",
        )
        return
    try:
        done = await asyncio.to_thread(finalize, resource, _connector(resource))
    except (ConnectionUnavailable, GatewayError) as exc:
        if retry + 1 < delete_retries():
            raise kopf.TemporaryError(str(exc), delay=delete_retry_delay()) from None
        kopf.warn(
            body,
            reason=reasons.EVENT_RELEASED_UNCLEAN,
            message=f"released after {retry + 1} attempts without cleaning up collection "
            f"{resource.collection_name} ({resource.spec.deletion_policy.value}): {exc}",
        )
        return
    kopf.event(body, type=done.event.type, reason=done.event.reason, message=done.event.message)
