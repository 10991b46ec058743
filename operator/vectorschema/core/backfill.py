"""Backfill planning (issue 18): which Jobs to run after a plan ran, and what they look like.

After a plan added, replaced or recreated vectors, each (collection to reprocess, plugin
whose vectors were touched) pair needs its vectors filled. Under `spec.reprocess: Auto`
the operator runs the plugin's Job template (`Plugin.spec.backfill.jobTemplate`) once per
pair; this module decides, as pure functions of what is known:

- `requests_after`: the pairs a plan that ran asks for;
- `job_manifest`: the Job for a pair: the Plugin's template (only the Plugin decides the
  Pod spec: the tenant's spec contributes nothing but the collection id, as a value),
  the `VECTORSCHEMA_*`/`QDRANT_*` environment, the labels and annotations the operator
  finds it by, and an ownerReference to the Namespace resource (deleting it collects the
  Job);
- `job_name`: deterministic from (owner uid, collection, plugin, plan, attempt), so an
  operator restarted mid-Job adopts it instead of starting a second one;
- `sync`: the next `status.reprocess` from the last one, the new requests, the Jobs as
  they are, the retry annotation and the free slots under the admin's caps: which Jobs to
  create and delete, and the Events to post. A newer plan touching a pair supersedes its
  Job (deleted, a new one starts with the union of the vectors still to fill);
- `summary`: the Reprocessed condition.

No I/O: the controller (`controller.backfill`) lists, creates and deletes the Jobs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from vectorschema.api import (
    API_VERSION,
    BACKFILL_ATTEMPT_ANNOTATION,
    BACKFILL_COLLECTION_ANNOTATION,
    BACKFILL_LABEL,
    BACKFILL_OWNER_UID_LABEL,
    BACKFILL_PLAN_ANNOTATION,
    BACKFILL_PLUGIN_ANNOTATION,
    BACKFILL_TEMPLATE_ANNOTATION,
    NAMESPACE_KIND,
    ConditionStatus,
    EventReason,
    IngestionCollection,
    Reason,
    ReprocessEntry,
    ReprocessState,
)

#: The environment every backfill container gets (the contract of a backfill program).
ENV_COLLECTION = "VECTORSCHEMA_COLLECTION"
ENV_COLLECTION_ID = "VECTORSCHEMA_COLLECTION_ID"
ENV_VECTORS = "VECTORSCHEMA_VECTORS"
ENV_PLAN = "VECTORSCHEMA_PLAN"
ENV_RECREATED = "VECTORSCHEMA_RECREATED"
ENV_QDRANT_URL = "QDRANT_URL"
ENV_QDRANT_API_KEY = "QDRANT_API_KEY"
INJECTED_ENV = (
    ENV_COLLECTION,
    ENV_COLLECTION_ID,
    ENV_VECTORS,
    ENV_PLAN,
    ENV_RECREATED,
    ENV_QDRANT_URL,
    ENV_QDRANT_API_KEY,
)

#: Longest Job name: the Job controller copies it into a Pod label (63 characters at most).
MAX_JOB_NAME = 63
#: A Pod's termination message in status is cut to this many characters.
MAX_MESSAGE = 1024

ACTIVE = (ReprocessState.PENDING, ReprocessState.RUNNING)


@dataclass(frozen=True)
class Request:
    """One pair a plan that ran asks to reprocess."""

    collection: str
    plugin: str
    vectors: tuple[str, ...]
    recreated: bool
    plan: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.collection, self.plugin)


def requests_after(
    *,
    plan: str,
    to_reprocess: Sequence[str],
    collections: Sequence[IngestionCollection],
    plugin_vectors: Mapping[str, Sequence[str]],
    refill: set[str],
    recreated: bool,
) -> list[Request]:
    """The pairs (collection to reprocess x plugin feeding it) whose plugin brings a vector
    in `refill` (added or replaced; every vector after a recreate), with those vectors.

    `plugin_vectors` maps each plugin of the namespace to the names of its vectors.
    """
    wanted = set(to_reprocess)
    out: list[Request] = []
    for c in collections:
        if c.id not in wanted:
            continue
        for plugin in dict.fromkeys(c.plugins):
            vectors = tuple(v for v in plugin_vectors.get(plugin, ()) if v in refill)
            if vectors:
                out.append(Request(c.id, plugin, vectors, recreated, plan))
    return out


# --- Jobs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Owner:
    """The Namespace resource a Job belongs to, and how its Pods reach Qdrant."""

    namespace: str
    name: str
    uid: str
    collection: str
    qdrant_url: str | None = None
    #: (Secret name, key) of the API key: the Namespace's own labelled Secret.
    api_key_ref: tuple[str, str] | None = None


def _dns_part(text: str, limit: int) -> str:
    part = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return part[:limit].strip("-")


def job_name(owner: Owner, collection: str, plugin: str, plan: str, attempt: int) -> str:
    """`<resource>-<plugin>-<digest>`: deterministic, a valid label value (<= 63)."""
    digest = hashlib.sha256(
        json.dumps([owner.uid, collection, plugin, plan, attempt]).encode()
    ).hexdigest()[:10]
    head = "-".join(p for p in (_dns_part(owner.name, 24), _dns_part(plugin, 24)) if p)
    return f"{head}-{digest}" if head else f"backfill-{digest}"


def pod_fingerprint(pod_spec: Mapping[str, Any]) -> str:
    """What decides what runs, read the same way off the template and off a live Job (the
    API server adds defaults elsewhere): the service account and each container's name,
    image, command and args. A Job whose fingerprint differs is not the Plugin's."""

    def containers(key: str) -> list[list[Any]]:
        return [
            [c.get("name"), c.get("image"), c.get("command") or [], c.get("args") or []]
            for c in pod_spec.get(key) or []
        ]

    essence = [
        pod_spec.get("serviceAccountName") or pod_spec.get("serviceAccount") or "default",
        containers("initContainers"),
        containers("containers"),
    ]
    return hashlib.sha256(json.dumps(essence).encode()).hexdigest()[:16]


def _env(owner: Owner, entry: ReprocessEntry) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": ENV_COLLECTION, "value": owner.collection},
        {"name": ENV_COLLECTION_ID, "value": entry.collection},
        {"name": ENV_VECTORS, "value": ",".join(entry.vectors)},
        {"name": ENV_PLAN, "value": entry.plan_fingerprint or ""},
        {"name": ENV_RECREATED, "value": "true" if entry.recreated else "false"},
    ]
    if owner.qdrant_url:
        env.append({"name": ENV_QDRANT_URL, "value": owner.qdrant_url})
    if owner.api_key_ref is not None:
        secret, key = owner.api_key_ref
        env.append(
            {
                "name": ENV_QDRANT_API_KEY,
                "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
            }
        )
    return env


def job_manifest(
    owner: Owner, entry: ReprocessEntry, template: Mapping[str, Any]
) -> dict[str, Any]:
    """The Job for `entry` (its `job` name set), from the Plugin's JobTemplateSpec."""
    assert entry.job is not None
    meta = template.get("metadata") or {}
    spec: dict[str, Any] = copy.deepcopy(dict(template["spec"]))
    labels = {
        **(meta.get("labels") or {}),
        BACKFILL_LABEL: "true",
        BACKFILL_OWNER_UID_LABEL: owner.uid,
    }
    annotations = {
        **(meta.get("annotations") or {}),
        BACKFILL_COLLECTION_ANNOTATION: entry.collection,
        BACKFILL_PLUGIN_ANNOTATION: entry.plugin,
        BACKFILL_PLAN_ANNOTATION: entry.plan_fingerprint or "",
        BACKFILL_ATTEMPT_ANNOTATION: str(entry.attempts),
    }
    pod_template = spec["template"]
    pod_meta = pod_template.setdefault("metadata", {})
    pod_meta["labels"] = {
        **(pod_meta.get("labels") or {}),
        BACKFILL_LABEL: "true",
        BACKFILL_OWNER_UID_LABEL: owner.uid,
    }
    pod = pod_template["spec"]
    pod.setdefault("restartPolicy", "Never")
    ours = _env(owner, entry)
    for key in ("initContainers", "containers"):
        for container in pod.get(key) or []:
            kept = [e for e in container.get("env") or [] if e.get("name") not in INJECTED_ENV]
            container["env"] = kept + copy.deepcopy(ours)
    annotations[BACKFILL_TEMPLATE_ANNOTATION] = pod_fingerprint(pod)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": entry.job,
            "namespace": owner.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": NAMESPACE_KIND,
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": False,
                }
            ],
        },
        "spec": spec,
    }


@dataclass(frozen=True)
class ObservedJob:
    """A live Job of this owner, as far as reprocessing cares."""

    name: str
    state: Literal[ReprocessState.RUNNING, ReprocessState.SUCCEEDED, ReprocessState.FAILED]
    #: `pod_fingerprint` of its live Pod spec.
    fingerprint: str
    #: The failed Pod's termination message (else the Job's failure condition's).
    message: str = ""
    finished: str | None = None
    deleting: bool = False


def job_state(status: Mapping[str, Any]) -> ReprocessState:
    """Running, Succeeded or Failed, from a Job's status conditions."""
    for c in status.get("conditions") or []:
        if c.get("status") != "True":
            continue
        if c.get("type") == "Complete":
            return ReprocessState.SUCCEEDED
        if c.get("type") == "Failed":
            return ReprocessState.FAILED
    return ReprocessState.RUNNING


def failure_message(status: Mapping[str, Any]) -> str:
    """The Job's own account of its failure (reason: message)."""
    for c in status.get("conditions") or []:
        if c.get("type") == "Failed" and c.get("status") == "True":
            return ": ".join(p for p in (c.get("reason"), c.get("message")) if p)
    return ""


# --- sync --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Note:
    """An Event to post about the Namespace resource."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Decision:
    """What `sync` decided: the new entries, Jobs to create (entries with their new Job
    name) and to delete (names), and the Events."""

    entries: list[ReprocessEntry]
    create: list[ReprocessEntry] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    retry_token: str | None = None


def sync(
    entries: Sequence[ReprocessEntry],
    requests: Sequence[Request],
    jobs: Mapping[str, ObservedJob],
    *,
    owner: Owner,
    templates: Mapping[str, Mapping[str, Any] | None],
    collections: Sequence[IngestionCollection],
    alive: set[str],
    auto: bool,
    free: int | None,
    now: str,
    retry: str | None = None,
    last_retry: str | None = None,
    expected: Mapping[str, str] | None = None,
) -> Decision:
    """The next `status.reprocess`.

    - `templates`: plugin -> its Job template (None: no backfill; the pair is Manual);
    - `collections`: spec.collections (entries of a collection or plugin no longer listed
      there are dropped, their Jobs deleted); `alive`: the desired vector names;
    - `auto`: spec.reprocess is Auto (Pending pairs start only then);
    - `free`: how many Jobs may start now under the admin's caps (None: no cap);
    - `retry`/`last_retry`: the retry annotation's value and the last one acted on;
    - `expected`: plugin -> the `pod_fingerprint` its template gives (a live Job with
      another is not adopted: deleted and started again under a new name).
    """
    decision = Decision(entries=[], retry_token=last_retry)
    notes, delete = decision.notes, decision.delete
    fed = {c.id: set(c.plugins) for c in collections}
    current: dict[tuple[str, str], ReprocessEntry] = {}
    for e in entries:
        if e.plugin in fed.get(e.collection, set()):
            current[e.key] = e
        elif e.state in ACTIVE and e.job is not None:
            delete.append(e.job)  # no longer fed by that plugin: nothing to fill

    # 1. Newer plans supersede: one entry per pair, with every vector still to fill.
    for r in requests:
        old = current.get(r.key)
        vectors = set(r.vectors)
        recreated = r.recreated
        if old is not None and old.state not in (ReprocessState.SUCCEEDED, ReprocessState.MANUAL):
            vectors |= set(old.vectors) & alive
            recreated = recreated or old.recreated
            if old.job is not None and old.state in ACTIVE:
                delete.append(old.job)
                notes.append(
                    Note(
                        "Normal",
                        EventReason.BACKFILL_SUPERSEDED,
                        f"Job {old.job} ({old.plugin} on {old.collection}, plan "
                        f"{old.plan_fingerprint}) superseded by plan {r.plan}: deleted",
                    )
                )
        has_template = templates.get(r.plugin) is not None
        current[r.key] = ReprocessEntry(
            collection=r.collection,
            plugin=r.plugin,
            state=ReprocessState.PENDING if has_template else ReprocessState.MANUAL,
            vectors=sorted(vectors),
            recreated=recreated,
            plan_fingerprint=r.plan,
            message=""
            if has_template
            else f"plugin {r.plugin} has no spec.backfill: "
            + ("re-ingest" if recreated else "fill its vectors")
            + f" for collection {r.collection} by hand",
        )

    # 2. What the Jobs did.
    for key, e in list(current.items()):
        if e.state is not ReprocessState.RUNNING or e.job is None:
            continue
        job = jobs.get(e.job)
        want = (expected or {}).get(e.plugin)
        if job is None or job.deleting:
            current[key] = _restart(e, f"Job {e.job} disappeared; starting it again")
            continue
        if want is not None and job.fingerprint != want:
            delete.append(job.name)
            notes.append(
                Note(
                    "Warning",
                    EventReason.BACKFILL_REPLACED,
                    f"Job {job.name} does not run plugin {e.plugin}'s template: deleted; "
                    "starting the plugin's Job under a new name",
                )
            )
            current[key] = _restart(e, f"Job {job.name} was not the plugin's; replaced")
            continue
        if job.state is ReprocessState.SUCCEEDED:
            current[key] = e.model_copy(
                update={
                    "state": ReprocessState.SUCCEEDED,
                    "completion_time": job.finished or now,
                    "message": "",
                }
            )
            notes.append(
                Note(
                    "Normal",
                    EventReason.BACKFILL_SUCCEEDED,
                    f"Job {e.job} filled {', '.join(e.vectors)} ({e.plugin}) for collection "
                    f"{e.collection}",
                )
            )
        elif job.state is ReprocessState.FAILED:
            message = (job.message or "the Job failed")[:MAX_MESSAGE]
            current[key] = e.model_copy(
                update={
                    "state": ReprocessState.FAILED,
                    "completion_time": job.finished or now,
                    "message": message,
                }
            )
            notes.append(
                Note(
                    "Warning",
                    EventReason.BACKFILL_FAILED,
                    f"Job {e.job} ({e.plugin} on {e.collection}) failed: {message}",
                )
            )

    # 3. The retry annotation: each new value retries every failed pair once.
    if retry and retry != last_retry:
        decision.retry_token = retry
        for key, e in list(current.items()):
            if e.state is ReprocessState.FAILED and templates.get(e.plugin) is not None:
                if e.job is not None:
                    delete.append(e.job)
                current[key] = e.model_copy(
                    update={
                        "state": ReprocessState.PENDING,
                        "message": f"retry requested ({retry})",
                        "completion_time": None,
                    }
                )
                notes.append(
                    Note(
                        "Normal",
                        EventReason.BACKFILL_RETRIED,
                        f"retrying {e.plugin} on {e.collection} (failed Job {e.job})",
                    )
                )

    # 4. Start what waits, within the free slots.
    budget = free
    for key, e in list(current.items()):
        if e.state is not ReprocessState.PENDING or not auto:
            continue
        if templates.get(e.plugin) is None:
            current[key] = e.model_copy(update={"state": ReprocessState.MANUAL})
            continue
        if budget is not None and budget <= 0:
            waiting = "waiting for a free slot (the admin's cap on concurrent backfill Jobs)"
            current[key] = e.model_copy(update={"message": waiting})
            continue
        if e.job is not None and e.job in jobs and jobs[e.job].state is ReprocessState.RUNNING:
            delete.append(e.job)  # an earlier Job of this pair, superseded: stop it
        attempt = e.attempts + 1
        started = e.model_copy(
            update={
                "state": ReprocessState.RUNNING,
                "attempts": attempt,
                "job": job_name(owner, e.collection, e.plugin, e.plan_fingerprint or "", attempt),
                "start_time": now,
                "completion_time": None,
                "message": "",
            }
        )
        current[key] = started
        decision.create.append(started)
        if budget is not None:
            budget -= 1

    decision.entries = sorted(current.values(), key=lambda e: e.key)
    decision.delete = list(dict.fromkeys(delete))
    return decision


def _restart(e: ReprocessEntry, why: str) -> ReprocessEntry:
    """Back to Pending (it starts again as the next attempt, under a new name)."""
    return e.model_copy(update={"state": ReprocessState.PENDING, "message": why})


def started_notes(created: Sequence[ReprocessEntry]) -> list[Note]:
    return [
        Note(
            "Normal",
            EventReason.BACKFILL_STARTED,
            f"Job {e.job} started: {e.plugin} fills {', '.join(e.vectors)} for collection "
            f"{e.collection} (plan {e.plan_fingerprint}, attempt {e.attempts})",
        )
        for e in created
    ]


def summary(entries: Sequence[ReprocessEntry]) -> tuple[ConditionStatus | None, str, str]:
    """The Reprocessed condition: (status, reason, message); None when there is nothing.

    False while a Job fails or runs or waits; True once every Job succeeded (pairs whose
    plugin has no backfill are named in the message); False/ManualReprocessRequired when
    only such pairs are left.
    """
    if not entries:
        return None, "", ""
    by_state: dict[ReprocessState, list[ReprocessEntry]] = {}
    for e in entries:
        by_state.setdefault(e.state, []).append(e)

    def pairs(state: ReprocessState) -> str:
        return ", ".join(f"{e.plugin} on {e.collection}" for e in by_state.get(state, []))

    manual = by_state.get(ReprocessState.MANUAL, [])
    manual_note = f"; by hand (no spec.backfill): {pairs(ReprocessState.MANUAL)}" if manual else ""
    if ReprocessState.FAILED in by_state:
        failed = by_state[ReprocessState.FAILED]
        first = failed[0]
        return (
            ConditionStatus.FALSE,
            Reason.BACKFILL_FAILED,
            f"{len(failed)} backfill Job(s) failed: {pairs(ReprocessState.FAILED)} "
            f"({first.job}: {first.message}); retry with the annotation "
            f"vectorschema.dev/retry-backfill=<new value>",
        )
    running = by_state.get(ReprocessState.RUNNING, [])
    pending = by_state.get(ReprocessState.PENDING, [])
    if running or pending:
        return (
            ConditionStatus.FALSE,
            Reason.BACKFILL_RUNNING,
            f"{len(running)} backfill Job(s) running, {len(pending)} waiting"
            + (f": {pairs(ReprocessState.RUNNING)}" if running else "")
            + manual_note,
        )
    succeeded = by_state.get(ReprocessState.SUCCEEDED, [])
    if succeeded:
        return (
            ConditionStatus.TRUE,
            Reason.BACKFILL_SUCCEEDED,
            f"{len(succeeded)} backfill Job(s) succeeded" + manual_note,
        )
    return (
        ConditionStatus.FALSE,
        Reason.MANUAL_REPROCESS_REQUIRED,
        f"no plugin has a backfill Job{manual_note}",
    )
