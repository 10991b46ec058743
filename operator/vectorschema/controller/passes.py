"""One pass over one Namespace as the operator runs it: read the object fresh, reconcile
it, write what changed, consume the approval annotation. Runs in a worker thread.

kopf-free and Kubernetes-client-free: the object store (`status_writer.NamespaceStore`)
and the connection (`connector_for`) are handed in by the kopf layer, so unit tests run a
pass against in-memory fakes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from vectorschema.api import (
    CONFIRM_ANNOTATION,
    Condition,
    ConditionType,
    NamespaceResource,
    NamespaceStatus,
    PluginSpec,
    Reason,
    describe,
)
from vectorschema.controller import backfill as backfills
from vectorschema.controller import failpoints
from vectorschema.controller.backoff import RetryKind
from vectorschema.controller.locks import ResourceLocks
from vectorschema.controller.reconcile import EMBEDDED, Connector, invalid_spec, reconcile
from vectorschema.controller.results import Result
from vectorschema.controller.status_writer import (
    Conflict,
    NamespaceStore,
    NotFound,
    StatusWriter,
    parse_status,
)
from vectorschema.core.caps import Caps
from vectorschema.core.policy import Policy

log = logging.getLogger("vectorschema")


def run_pass(
    store: NamespaceStore,
    namespace: str,
    name: str,
    plugins: Mapping[str, PluginSpec],
    connector_for: Callable[[NamespaceResource], Connector],
    *,
    now: datetime | None = None,
    locks: ResourceLocks | None = None,
    policy: Policy | None = None,
    connection_of: Callable[[NamespaceResource], str] = lambda _: EMBEDDED,
    caps: Caps | None = None,
    over_cap: str | None = None,
    backfill: backfills.Backfill | None = None,
) -> Result | None:
    """Read the object fresh, reconcile it, run its backfill Jobs (with `backfill`), write
    what changed. None when it is gone.

    `caps` are the admin's limits on the spec; `over_cap` a refusal decided by the caller
    (this resource is beyond its Kubernetes namespace's cap): Stalled/LimitExceeded,
    nothing connected.

    With `locks`, the whole pass holds the resource's lock: one pass per resource at a
    time, across tasks, threads and the finaliser; a pass that waited for the finaliser
    finds the resource released and writes nothing.
    """
    args = (store, namespace, name, plugins, connector_for, now, policy, connection_of)
    if locks is None:
        return _run_pass(*args, caps=caps, over_cap=over_cap, backfill=backfill)
    with locks.hold((namespace, name)):
        return _run_pass(*args, locks=locks, caps=caps, over_cap=over_cap, backfill=backfill)


def _run_pass(
    store: NamespaceStore,
    namespace: str,
    name: str,
    plugins: Mapping[str, PluginSpec],
    connector_for: Callable[[NamespaceResource], Connector],
    now: datetime | None,
    policy: Policy | None,
    connection_of: Callable[[NamespaceResource], str],
    backfill: backfills.Backfill | None = None,
    locks: ResourceLocks | None = None,
    caps: Caps | None = None,
    over_cap: str | None = None,
) -> Result | None:
    try:
        body = store.get(namespace, name)
    except NotFound:
        return None
    now = now or datetime.now(UTC)
    meta = body.get("metadata", {})
    if meta.get("deletionTimestamp") or (
        locks is not None and locks.released((namespace, name), meta.get("uid"))
    ):
        return None
    writer = StatusWriter(store, namespace, name, body)
    old = parse_status(body)
    try:
        resource = NamespaceResource.model_validate(
            {"metadata": meta, "spec": body.get("spec") or {}, "status": None}
        )
    except ValidationError as exc:
        result = invalid_spec(old, describe(exc), meta.get("generation"), now)
    else:
        if over_cap is not None:
            result = invalid_spec(
                old, over_cap, meta.get("generation"), now, reason=Reason.LIMIT_EXCEEDED
            )
            return _finish_pass(store, writer, namespace, name, old, result)
        resource = resource.model_copy(update={"status": parse_status(body)})
        try:
            result = reconcile(
                resource,
                plugins,
                connector_for(resource),
                now=now,
                write_intent=writer.intent,
                policy=policy,
                connection=connection_of(resource),
                consume_annotation=lambda: writer.remove_annotation(CONFIRM_ANNOTATION),
                caps=caps,
            )
        except (Conflict, NotFound):
            # The object changed (or went) while this pass worked: whatever ran was
            # recorded step by step; the next pass starts from a fresh read.
            return Result(status=NamespaceStatus(), retry=RetryKind.CONFLICT)
        if backfill is not None:
            _run_backfill(backfill, resource, result, plugins, now)
    return _finish_pass(store, writer, namespace, name, old, result)


def _finish_pass(
    store: NamespaceStore,
    writer: StatusWriter,
    namespace: str,
    name: str,
    old: NamespaceStatus,
    result: Result,
) -> Result:
    failpoints.before("final_status")
    writer.final(result.status)
    ready = ready_change(old, result.status)
    if ready is not None:
        log.info(
            "%s/%s: Ready=%s/%s %s",
            namespace,
            name,
            ready.status.value,
            ready.reason,
            ready.message,
        )
    if result.remove_annotation:
        store.set_annotation(namespace, name, CONFIRM_ANNOTATION, None)
    return result


def _run_backfill(
    backfill: backfills.Backfill,
    resource: NamespaceResource,
    result: Result,
    plugins: Mapping[str, PluginSpec],
    now: datetime,
) -> None:
    """The backfill Jobs, into the same status write. A Kubernetes failure here leaves
    status.reprocess as it was (Jobs are named deterministically: the next pass adopts
    what this one created) and retries the pass."""
    before = result.status.model_copy(deep=True)
    try:
        result.events.extend(
            backfills.run(backfill, resource, result.status, result.reprocess, plugins, now)
        )
    except Exception:
        log.exception("%s: backfill Jobs", resource.owner_id)
        # The plan's requests are not lost: they wait as Pending for the next pass.
        result.status.reprocess = backfills.remember(
            before.reprocess or [], result.reprocess, plugins, resource
        )
        result.status.reprocess_retry = before.reprocess_retry
        result.status.conditions = before.conditions
        if result.retry is None:
            result.retry = RetryKind.UNAVAILABLE


def marked_over_cap(body: Mapping[str, Any]) -> bool:
    """The resource's status already says LimitExceeded for its current generation: a
    resource beyond its Kubernetes namespace's cap needs no further status write."""
    generation = (body.get("metadata") or {}).get("generation")
    try:
        status = parse_status(body)
    except Exception:  # a status that does not parse: write ours
        return False
    stalled = status.condition(ConditionType.STALLED)
    return (
        stalled is not None
        and stalled.reason == Reason.LIMIT_EXCEEDED
        and stalled.observed_generation == generation
    )


def ready_change(old: NamespaceStatus, new: NamespaceStatus) -> Condition | None:
    """The new Ready condition when its status or reason changed (worth a log line)."""
    before = old.condition(ConditionType.READY)
    after = new.condition(ConditionType.READY)
    if after is None:
        return None
    if before is not None and (before.status, before.reason) == (after.status, after.reason):
        return None
    return after


def valid_plugins(specs: Mapping[str, Iterable[Mapping[str, Any]]]) -> dict[str, PluginSpec]:
    """The Plugins whose spec parses, by name; the others are treated as missing."""
    out: dict[str, PluginSpec] = {}
    for name, raws in specs.items():
        for raw in raws:
            try:
                out[name] = PluginSpec.model_validate(raw)
            except ValidationError:
                log.warning("plugin %s has an invalid spec; treated as missing", name)
    return out
