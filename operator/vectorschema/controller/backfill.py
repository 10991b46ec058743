"""Backfill Jobs of one Namespace, as a pass runs them (issue 18): list, create, adopt,
delete, and `status.reprocess` with the Reprocessed condition, in the pass's one status
write.

The decisions are `core.backfill`'s (pure); this module does the I/O through `JobStore`
(the kopf layer implements it over the Kubernetes API; tests use an in-memory one) and
keeps the admin's caps on concurrent Jobs (`Slots`, one per operator) across passes of
different Namespaces running at once in worker threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from vectorschema.api import (
    BACKFILL_OWNER_UID_LABEL,
    RETRY_BACKFILL_ANNOTATION,
    EventReason,
    NamespaceResource,
    NamespaceStatus,
    PluginSpec,
    Reprocess,
    ReprocessEntry,
    ReprocessState,
    timestamp,
)
from vectorschema.controller.results import Event
from vectorschema.core.backfill import (
    MAX_MESSAGE,
    Note,
    ObservedJob,
    Owner,
    Request,
    failure_message,
    job_manifest,
    job_state,
    pod_fingerprint,
    started_notes,
    summary,
    sync,
)

log = logging.getLogger("vectorschema")


class JobExists(Exception):
    """A Job of that name exists already (HTTP 409)."""


class JobRejected(Exception):
    """The API server refused the Job (HTTP 422: the Plugin's template is invalid)."""


class JobStore(Protocol):
    """The Job calls a pass makes, in the Namespace resource's Kubernetes namespace."""

    def list(self, namespace: str, owner_uid: str) -> list[dict[str, Any]]:
        """The Jobs carrying the owner's uid label."""
        ...

    def create(self, body: dict[str, Any]) -> None:
        """Create the Job; raises JobExists or JobRejected."""
        ...

    def delete(self, namespace: str, name: str) -> None:
        """Delete it with its Pods (background propagation); gone already is fine."""
        ...

    def termination_message(self, namespace: str, job: str) -> str:
        """The termination message of the Job's last failed Pod ("" if none)."""
        ...


@dataclass(frozen=True)
class Caps:
    """The admin's caps on concurrent backfill Jobs (None: no cap)."""

    total: int | None = None
    per_namespace: int | None = None


#: A reservation not seen among the active Jobs within this many seconds is forgotten.
RESERVATION_SECONDS = 120.0


@dataclass
class Slots:
    """Concurrent backfill Jobs under the admin's caps, across this operator's passes.

    The active Jobs come from the caller (the operator's watch of Jobs, snapshotted per
    pass); Jobs a pass created that the watch has not shown yet are reserved here, so two
    passes at once never both take the last slot.
    """

    caps: Caps = field(default_factory=Caps)
    clock: Callable[[], float] = time.monotonic
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reserved: dict[tuple[str, str], float] = field(default_factory=dict)

    @contextmanager
    def window(self, namespace: str, active: Mapping[str, set[str]]) -> Iterator[SlotWindow]:
        """Hold the slots while a pass decides and creates; yields how many are free."""
        with self._lock:
            now = self.clock()
            for key, at in list(self._reserved.items()):
                if key[1] in active.get(key[0], set()) or now - at > RESERVATION_SECONDS:
                    del self._reserved[key]
            running: dict[str, set[str]] = {ns: set(names) for ns, names in active.items()}
            for ns, name in self._reserved:
                running.setdefault(ns, set()).add(name)
            free: list[int] = []
            if self.caps.total is not None:
                free.append(self.caps.total - sum(len(v) for v in running.values()))
            if self.caps.per_namespace is not None:
                free.append(self.caps.per_namespace - len(running.get(namespace, set())))
            window = SlotWindow(max(0, min(free)) if free else None)
            yield window
            for name in window.started:
                self._reserved[(namespace, name)] = now


@dataclass
class SlotWindow:
    free: int | None
    started: list[str] = field(default_factory=list)


def plugin_vectors(
    plugins: Mapping[str, PluginSpec], resource: NamespaceResource
) -> dict[str, list[str]]:
    """Each plugin of the namespace -> its vectors' names (inline or the Plugin's)."""
    out: dict[str, list[str]] = {}
    for ref in resource.spec.plugins:
        vectors = ref.vectors if ref.vectors is not None else None
        if vectors is None and ref.name in plugins:
            vectors = plugins[ref.name].vectors
        out[ref.name] = [v.name for v in vectors or []]
    return out


def templates_of(
    plugins: Mapping[str, PluginSpec], resource: NamespaceResource
) -> dict[str, dict[str, Any] | None]:
    """Each plugin of the namespace -> its Job template; an inline plugin has none (only a
    cluster Plugin, written by the admin, decides what runs)."""
    out: dict[str, dict[str, Any] | None] = {}
    for ref in resource.spec.plugins:
        spec = plugins.get(ref.name) if ref.vectors is None else None
        out[ref.name] = spec.backfill.job_template if spec and spec.backfill else None
    return out


def remember(
    entries: Sequence[ReprocessEntry],
    requests: Sequence[Request],
    plugins: Mapping[str, PluginSpec],
    resource: NamespaceResource,
) -> list[ReprocessEntry] | None:
    """`entries` with `requests` added as Pending (no Job touched): what a pass records
    when it cannot reach the Jobs, so the next pass starts them (superseding as usual)."""
    templates = templates_of(plugins, resource)
    by_key = {e.key: e for e in entries}
    for r in requests:
        old = by_key.get(r.key)
        vectors = set(r.vectors)
        job = None
        if old is not None and old.state in (ReprocessState.RUNNING, ReprocessState.PENDING):
            # superseded: its Job (kept in `job`) is deleted by the next pass that starts
            # the new one, which fills every vector either asked for
            vectors |= set(old.vectors)
            job = old.job
        by_key[r.key] = ReprocessEntry(
            collection=r.collection,
            plugin=r.plugin,
            state=ReprocessState.PENDING
            if templates.get(r.plugin) is not None
            else ReprocessState.MANUAL,
            vectors=sorted(vectors),
            recreated=r.recreated or (old is not None and job is not None and old.recreated),
            plan_fingerprint=r.plan,
            job=job,
            attempts=old.attempts if old is not None and job is not None else 0,
        )
    return sorted(by_key.values(), key=lambda e: e.key) or None


def observe(
    store: JobStore, namespace: str, body: Mapping[str, Any], known: ReprocessEntry | None
) -> ObservedJob:
    """One live Job, with its failed Pod's termination message when newly failed."""
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    state = job_state(status)
    message = ""
    name = str(meta.get("name"))
    if state is ReprocessState.FAILED and (
        known is None or known.state is not ReprocessState.FAILED
    ):
        message = store.termination_message(namespace, name) or failure_message(status)
    finished = None
    for c in status.get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            finished = c.get("lastTransitionTime")
    pod = ((body.get("spec") or {}).get("template") or {}).get("spec") or {}
    return ObservedJob(
        name=name,
        state=state,  # type: ignore[arg-type]
        fingerprint=pod_fingerprint(pod),
        message=message,
        finished=finished or status.get("completionTime"),
        deleting=bool(meta.get("deletionTimestamp")),
    )


@dataclass
class Backfill:
    """What a pass needs to run the backfill of one Namespace."""

    store: JobStore
    slots: Slots
    #: The active backfill Jobs by Kubernetes namespace (the operator's watch).
    active: Callable[[], Mapping[str, set[str]]]
    #: The QDRANT_URL the Jobs' Pods get, for this resource (None: not set).
    qdrant_url: Callable[[NamespaceResource], str | None] = lambda _: None


def run(
    backfill: Backfill,
    resource: NamespaceResource,
    status: NamespaceStatus,
    requests: Sequence[Request],
    plugins: Mapping[str, PluginSpec],
    now: datetime,
) -> list[Event]:
    """Bring `status.reprocess` and the Jobs in line; returns the Events to post."""
    auto = resource.spec.reprocess is Reprocess.AUTO
    entries = list(status.reprocess or [])
    retry = resource.metadata.annotations.get(RETRY_BACKFILL_ANNOTATION)
    retry_new = bool(retry) and retry != status.reprocess_retry
    if not (entries or requests or (auto and retry_new)):
        status.set_reprocessed(None, "", "", generation=None, now=now)
        return []
    uid = resource.metadata.uid or ""
    namespace = resource.kube_namespace
    conn = resource.spec.qdrant
    ref = conn.api_key_secret_ref if conn is not None else None
    owner = Owner(
        namespace=namespace,
        name=resource.metadata.name,
        uid=uid,
        collection=resource.collection_name,
        qdrant_url=backfill.qdrant_url(resource),
        api_key_ref=(ref.name, ref.key) if ref is not None else None,
    )
    templates = templates_of(plugins, resource)
    expected = {
        p: pod_fingerprint(_pod_of(owner, p, t)) for p, t in templates.items() if t is not None
    }
    by_job = {e.job: e for e in entries if e.job}
    live = backfill.store.list(namespace, uid) if any(e.job for e in entries) else []
    jobs = {
        str(b["metadata"]["name"]): observe(
            backfill.store, namespace, b, by_job.get(str(b["metadata"]["name"]))
        )
        for b in live
    }
    desired = {v for names in plugin_vectors(plugins, resource).values() for v in names}
    stamp = timestamp(now)
    with backfill.slots.window(namespace, backfill.active()) as window:
        decision = sync(
            entries,
            requests,
            jobs,
            owner=owner,
            templates=templates,
            collections=resource.spec.collections,
            alive=desired,
            auto=auto,
            free=window.free,
            now=stamp,
            retry=retry if auto else None,
            last_retry=status.reprocess_retry,
            expected=expected,
        )
        for name in decision.delete:
            backfill.store.delete(namespace, name)
        created: list[ReprocessEntry] = []
        refused: list[Note] = []
        final = {e.key: e for e in decision.entries}
        for entry in decision.create:
            template = templates[entry.plugin]
            assert template is not None and entry.job is not None
            try:
                backfill.store.create(job_manifest(owner, entry, template))
            except JobExists:
                pass  # ours from before a restart (the name is deterministic): adopted
            except JobRejected as exc:
                why = f"the API server refused Job {entry.job}: {exc}"[:MAX_MESSAGE]
                final[entry.key] = entry.model_copy(
                    update={
                        "state": ReprocessState.FAILED,
                        "message": why,
                        "completion_time": stamp,
                    }
                )
                refused.append(
                    Note(
                        "Warning",
                        EventReason.BACKFILL_FAILED,
                        f"{entry.plugin} on {entry.collection}: {why}",
                    )
                )
                continue
            window.started.append(entry.job)
            created.append(entry)
    status.reprocess = sorted(final.values(), key=lambda e: e.key) or None
    status.reprocess_retry = decision.retry_token
    state, reason, message = summary(status.reprocess or [])
    status.set_reprocessed(state, reason, message, generation=resource.metadata.generation, now=now)
    notes = [*decision.notes, *started_notes(created), *refused]
    return [Event(n.type, n.reason, n.message) for n in notes]


def _pod_of(owner: Owner, plugin: str, template: Mapping[str, Any]) -> dict[str, Any]:
    """The Pod spec the template gives (what `pod_fingerprint` of a live Job is held to)."""
    probe = ReprocessEntry(collection="", plugin=plugin, state=ReprocessState.PENDING, job="x")
    pod: dict[str, Any] = job_manifest(owner, probe, template)["spec"]["template"]["spec"]
    return pod


__all__ = [
    "BACKFILL_OWNER_UID_LABEL",
    "Backfill",
    "Caps",
    "JobExists",
    "JobRejected",
    "JobStore",
    "Request",
    "Slots",
    "run",
]
