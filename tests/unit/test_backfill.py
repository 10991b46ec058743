"""Backfill planning (core.backfill) and a pass's Jobs (controller.backfill), without I/O:
which pairs a plan asks for, the Job a Plugin's template gives, the next status.reprocess
(start, adopt, succeed, fail with the Pod's message, retry, supersede, caps), and the
Reprocessed condition."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from vectorschema.api import (
    BACKFILL_LABEL,
    BACKFILL_OWNER_UID_LABEL,
    RETRY_BACKFILL_ANNOTATION,
    ConditionStatus,
    IngestionCollection,
    NamespaceResource,
    NamespaceStatus,
    PluginSpec,
    Reprocess,
    ReprocessEntry,
    ReprocessState,
)
from vectorschema.controller import backfill as backfills
from vectorschema.core.backfill import (
    ENV_COLLECTION,
    ENV_COLLECTION_ID,
    ENV_PLAN,
    ENV_QDRANT_API_KEY,
    ENV_QDRANT_URL,
    ENV_RECREATED,
    ENV_VECTORS,
    MAX_JOB_NAME,
    Decision,
    ObservedJob,
    Owner,
    Request,
    job_manifest,
    job_name,
    job_state,
    pod_fingerprint,
    requests_after,
    summary,
    sync,
)

S = ReprocessState
NOW = "2026-12-04T12:00:00Z"
OWNER = Owner(namespace="tenant-a", name="search", uid="uid-1", collection="tenant-a_search")
TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"team": "ml"}},
    "spec": {
        "backoffLimit": 0,
        "template": {
            "spec": {
                "serviceAccountName": "backfill",
                "containers": [
                    {
                        "name": "fill",
                        "image": "vectorschema:dev",
                        "command": ["python", "-m", "fill"],
                        "env": [{"name": "QDRANT_URL", "value": "http://evil"}],
                    }
                ],
            }
        },
    },
}
COLLECTIONS = [
    IngestionCollection(id="docs", plugins=["text", "image"]),
    IngestionCollection(id="photos", plugins=["image"]),
]


def request(collection: str = "docs", plugin: str = "image", plan: str = "p1") -> Request:
    return Request(collection, plugin, ("image",), False, plan)


def run_sync(
    entries: list[ReprocessEntry],
    requests: list[Request] = [],  # noqa: B006
    jobs: dict[str, ObservedJob] | None = None,
    **kw: Any,
) -> Decision:
    args: dict[str, Any] = {
        "owner": OWNER,
        "templates": {"image": TEMPLATE, "text": None},
        "collections": COLLECTIONS,
        "alive": {"image", "text", "image2"},
        "auto": True,
        "free": None,
        "now": NOW,
    }
    args.update(kw)
    return sync(entries, requests, jobs or {}, **args)


# --- requests ----------------------------------------------------------------------------


def test_an_in_place_add_asks_for_each_collection_fed_by_the_plugin_that_brings_it() -> None:
    got = requests_after(
        plan="p1",
        to_reprocess=["docs", "photos"],
        collections=COLLECTIONS,
        plugin_vectors={"text": ["text"], "image": ["image"]},
        refill={"image"},
        recreated=False,
    )
    assert got == [request("docs"), request("photos")]


def test_collections_not_to_reprocess_and_plugins_without_touched_vectors_ask_nothing() -> None:
    got = requests_after(
        plan="p1",
        to_reprocess=["photos"],
        collections=COLLECTIONS,
        plugin_vectors={"text": ["text"], "image": ["image", "image2"]},
        refill={"image2"},
        recreated=False,
    )
    assert got == [Request("photos", "image", ("image2",), False, "p1")]


def test_a_recreate_asks_every_plugin_for_every_vector() -> None:
    got = requests_after(
        plan="p2",
        to_reprocess=["docs"],
        collections=COLLECTIONS,
        plugin_vectors={"text": ["text"], "image": ["image"]},
        refill={"text", "image"},
        recreated=True,
    )
    assert got == [
        Request("docs", "text", ("text",), True, "p2"),
        Request("docs", "image", ("image",), True, "p2"),
    ]


# --- the Job -----------------------------------------------------------------------------


def running(job: str = "j1", **kw: Any) -> ReprocessEntry:
    base: dict[str, Any] = {
        "collection": "docs",
        "plugin": "image",
        "state": S.RUNNING,
        "vectors": ["image"],
        "plan_fingerprint": "p1",
        "job": job,
        "attempts": 1,
        "start_time": NOW,
    }
    base.update(kw)
    return ReprocessEntry(**base)


def test_job_names_are_deterministic_valid_labels_and_differ_by_attempt_and_plan() -> None:
    a = job_name(OWNER, "docs", "image", "p1", 1)
    assert a == job_name(OWNER, "docs", "image", "p1", 1)
    assert a != job_name(OWNER, "docs", "image", "p1", 2)
    assert a != job_name(OWNER, "docs", "image", "p2", 1)
    assert a != job_name(OWNER, "photos", "image", "p1", 1)
    long = Owner("ns", "x" * 253, "u", "c")
    name = job_name(long, "c" * 200, "p." * 60 + "q", "p1", 9)
    assert len(name) <= MAX_JOB_NAME
    assert all(ch.isalnum() or ch == "-" for ch in name) and name[0].isalnum()


def test_the_job_runs_the_plugins_template_with_the_contract_environment() -> None:
    owner = Owner(
        namespace="tenant-a",
        name="search",
        uid="uid-1",
        collection="tenant-a_search",
        qdrant_url="http://qdrant:6333",
        api_key_ref=("qdrant-key", "api-key"),
    )
    entry = running(vectors=["image", "image2"], recreated=True)
    job = job_manifest(owner, entry, TEMPLATE)
    meta = job["metadata"]
    assert meta["name"] == "j1" and meta["namespace"] == "tenant-a"
    assert meta["labels"] == {
        "team": "ml",
        BACKFILL_LABEL: "true",
        BACKFILL_OWNER_UID_LABEL: "uid-1",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "vectorschema.dev/v1alpha1",
            "kind": "Namespace",
            "name": "search",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": False,
        }
    ]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "backfill"
    (container,) = pod["containers"]
    assert container["image"] == "vectorschema:dev"
    env = {e["name"]: e for e in container["env"]}
    assert env[ENV_COLLECTION]["value"] == "tenant-a_search"
    assert env[ENV_COLLECTION_ID]["value"] == "docs"
    assert env[ENV_VECTORS]["value"] == "image,image2"
    assert env[ENV_PLAN]["value"] == "p1"
    assert env[ENV_RECREATED]["value"] == "true"
    # the operator's values win over the template's
    assert env[ENV_QDRANT_URL]["value"] == "http://qdrant:6333"
    assert [e["name"] for e in container["env"]].count(ENV_QDRANT_URL) == 1
    assert env[ENV_QDRANT_API_KEY] == {
        "name": ENV_QDRANT_API_KEY,
        "valueFrom": {"secretKeyRef": {"name": "qdrant-key", "key": "api-key"}},
    }
    assert TEMPLATE["spec"]["template"]["spec"]["containers"][0]["env"] == [
        {"name": "QDRANT_URL", "value": "http://evil"}
    ], "the Plugin's template is not modified"


def test_without_a_secret_or_url_no_qdrant_variables_are_set() -> None:
    job = job_manifest(OWNER, running(), TEMPLATE)
    names = [e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert ENV_QDRANT_API_KEY not in names and ENV_QDRANT_URL not in names


def test_the_pod_fingerprint_sees_image_command_and_service_account_only() -> None:
    pod = job_manifest(OWNER, running(), TEMPLATE)["spec"]["template"]["spec"]
    defaulted = {**pod, "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 30}
    assert pod_fingerprint(defaulted) == pod_fingerprint(pod)
    other = {**pod, "containers": [{**pod["containers"][0], "image": "tenant/miner"}]}
    assert pod_fingerprint(other) != pod_fingerprint(pod)
    assert pod_fingerprint({**pod, "serviceAccountName": "admin"}) != pod_fingerprint(pod)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ({}, "spec is required"),
        ({"spec": {}}, "spec.template.spec is required"),
        ({"spec": {"template": {"spec": {"containers": []}}}}, "at least one container"),
        ({"spec": {"template": {"spec": {"containers": [{"name": "a"}]}}}}, "name and image"),
        (
            {
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Always",
                            "containers": [{"name": "a", "image": "i"}],
                        }
                    }
                }
            },
            "restartPolicy",
        ),
    ],
)
def test_a_plugin_backfill_needs_a_pod_template_a_job_can_run(
    template: dict[str, Any], problem: str
) -> None:
    vectors = [{"name": "image", "size": 4, "distance": "Cosine"}]
    with pytest.raises(ValidationError, match=problem):
        PluginSpec.model_validate({"vectors": vectors, "backfill": {"jobTemplate": template}})
    ok = PluginSpec.model_validate({"vectors": vectors, "backfill": {"jobTemplate": TEMPLATE}})
    assert ok.backfill is not None and ok.backfill.job_template == TEMPLATE


def test_job_state_reads_the_job_conditions() -> None:
    assert job_state({}) is S.RUNNING
    assert job_state({"conditions": [{"type": "Complete", "status": "True"}]}) is S.SUCCEEDED
    assert job_state({"conditions": [{"type": "Failed", "status": "True"}]}) is S.FAILED
    assert job_state({"conditions": [{"type": "Failed", "status": "False"}]}) is S.RUNNING


# --- sync --------------------------------------------------------------------------------


def observed(name: str, state: ReprocessState, **kw: Any) -> ObservedJob:
    pod = job_manifest(OWNER, running(name), TEMPLATE)["spec"]["template"]["spec"]
    return ObservedJob(name=name, state=state, fingerprint=pod_fingerprint(pod), **kw)  # type: ignore[arg-type]


def test_a_request_starts_a_job_and_a_plugin_without_backfill_is_manual() -> None:
    d = run_sync([], [request(), Request("docs", "text", ("text",), False, "p1")])
    by = {e.plugin: e for e in d.entries}
    assert by["image"].state is S.RUNNING and by["image"].attempts == 1
    assert by["image"].job == job_name(OWNER, "docs", "image", "p1", 1)
    assert by["image"].start_time == NOW
    assert by["text"].state is S.MANUAL and by["text"].job is None
    assert "has no spec.backfill" in by["text"].message
    assert [e.key for e in d.create] == [("docs", "image")]
    assert d.delete == []


def test_under_manual_nothing_starts() -> None:
    d = run_sync([], [request()], auto=False)
    assert d.create == [] and d.entries[0].state is S.PENDING


def test_a_running_job_stays_running_and_nothing_is_created_again() -> None:
    e = running()
    d = run_sync([e], jobs={"j1": observed("j1", S.RUNNING)})
    assert d.entries == [e] and d.create == [] and d.delete == [] and d.notes == []


def test_success_and_failure_are_read_off_the_jobs_with_the_pods_message() -> None:
    ok, bad = running("j1"), running("j2", collection="photos")
    d = run_sync(
        [ok, bad],
        jobs={
            "j1": observed("j1", S.SUCCEEDED, finished="2026-12-04T12:05:00Z"),
            "j2": observed("j2", S.FAILED, message="boom: no such collection"),
        },
    )
    by = {e.collection: e for e in d.entries}
    assert by["docs"].state is S.SUCCEEDED and by["docs"].completion_time == "2026-12-04T12:05:00Z"
    assert by["photos"].state is S.FAILED and by["photos"].message == "boom: no such collection"
    assert [n.reason for n in d.notes] == ["BackfillSucceeded", "BackfillFailed"]
    assert d.create == []


def test_the_retry_annotation_retries_failed_jobs_once_per_value() -> None:
    failed = running("j2", state=S.FAILED, message="boom")
    d = run_sync([failed], jobs={"j2": observed("j2", S.FAILED)}, retry="1")
    (e,) = d.entries
    assert e.state is S.RUNNING and e.attempts == 2 and e.job != "j2"
    assert d.delete == ["j2"] and d.retry_token == "1"
    assert [n.reason for n in d.notes] == ["BackfillRetried"]
    again = run_sync([failed], jobs={"j2": observed("j2", S.FAILED)}, retry="1", last_retry="1")
    assert again.entries == [failed] and again.create == [] and again.retry_token == "1"


def test_a_newer_plan_supersedes_the_running_job_and_fills_both_plans_vectors() -> None:
    old = running("j1")
    newer = Request("docs", "image", ("image2",), False, "p2")
    d = run_sync([old], [newer], jobs={"j1": observed("j1", S.RUNNING)})
    (e,) = d.entries
    assert d.delete == ["j1"]
    assert e.state is S.RUNNING and e.plan_fingerprint == "p2" and e.vectors == ["image", "image2"]
    assert e.job == job_name(OWNER, "docs", "image", "p2", 1)
    assert [n.reason for n in d.notes] == ["BackfillSuperseded"]


def test_a_newer_plan_after_success_fills_only_its_own_vectors() -> None:
    done = running("j1", state=S.SUCCEEDED)
    d = run_sync([done], [Request("docs", "image", ("image2",), False, "p2")])
    assert d.entries[0].vectors == ["image2"] and d.delete == []


def test_a_plan_touching_another_plugin_leaves_the_running_job_alone() -> None:
    old = running("j1")
    d = run_sync(
        [old],
        [Request("docs", "text", ("text",), False, "p2")],
        jobs={"j1": observed("j1", S.RUNNING)},
        templates={"image": TEMPLATE, "text": TEMPLATE},
    )
    assert d.delete == [] and {e.plugin: e.state for e in d.entries} == {
        "image": S.RUNNING,
        "text": S.RUNNING,
    }


def test_a_job_that_is_not_the_plugins_is_replaced_not_adopted() -> None:
    e = running("j1")
    forged = ObservedJob(name="j1", state=S.RUNNING, fingerprint="0000")
    want = pod_fingerprint(job_manifest(OWNER, e, TEMPLATE)["spec"]["template"]["spec"])
    d = run_sync([e], jobs={"j1": forged}, expected={"image": want})
    (new,) = d.entries
    assert d.delete == ["j1"] and new.job != "j1" and new.attempts == 2
    assert [n.reason for n in d.notes] == ["BackfillJobReplaced"]
    adopted = run_sync([e], jobs={"j1": observed("j1", S.RUNNING)}, expected={"image": want})
    assert adopted.entries == [e] and adopted.delete == []


def test_a_job_that_disappeared_is_started_again() -> None:
    d = run_sync([running("j1")], jobs={})
    assert d.entries[0].state is S.RUNNING and d.entries[0].attempts == 2
    assert len(d.create) == 1


def test_caps_keep_the_rest_pending_with_a_note() -> None:
    reqs = [request("docs"), request("photos")]
    d = run_sync([], reqs, free=1)
    states = {e.collection: e.state for e in d.entries}
    assert states == {"docs": S.RUNNING, "photos": S.PENDING}
    assert "waiting for a free slot" in d.entries[1].message
    none = run_sync([], reqs, free=0)
    assert all(e.state is S.PENDING for e in none.entries) and none.create == []


def test_pairs_no_longer_fed_are_dropped_and_their_jobs_deleted() -> None:
    e = running("j1")
    d = run_sync([e], collections=[IngestionCollection(id="docs", plugins=["text"])])
    assert d.entries == [] and d.delete == ["j1"]


# --- the condition -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "status", "reason"),
    [
        ([], None, ""),
        ([S.SUCCEEDED, S.SUCCEEDED], ConditionStatus.TRUE, "BackfillSucceeded"),
        ([S.SUCCEEDED, S.MANUAL], ConditionStatus.TRUE, "BackfillSucceeded"),
        ([S.SUCCEEDED, S.RUNNING], ConditionStatus.FALSE, "BackfillRunning"),
        ([S.PENDING], ConditionStatus.FALSE, "BackfillRunning"),
        ([S.RUNNING, S.FAILED], ConditionStatus.FALSE, "BackfillFailed"),
        ([S.MANUAL], ConditionStatus.FALSE, "ManualReprocessRequired"),
    ],
)
def test_reprocessed_sums_up_the_entries(
    states: list[ReprocessState], status: ConditionStatus | None, reason: str
) -> None:
    entries = [running(f"j{i}", collection=f"c{i}", state=s) for i, s in enumerate(states)]
    got = summary(entries)
    assert (got[0], got[1]) == (status, reason)


# --- a pass's Jobs (controller.backfill) ----------------------------------------------------


class FakeJobs:
    """An in-memory JobStore."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.messages: dict[str, str] = {}
        self.reject: str | None = None

    def list(self, namespace: str, owner_uid: str) -> list[dict[str, Any]]:
        return [
            j
            for j in self.jobs.values()
            if j["metadata"]["labels"].get(BACKFILL_OWNER_UID_LABEL) == owner_uid
        ]

    def create(self, body: dict[str, Any]) -> None:
        if self.reject is not None:
            raise backfills.JobRejected(self.reject)
        name = body["metadata"]["name"]
        if name in self.jobs:
            raise backfills.JobExists(name)
        self.jobs[name] = {**body, "status": {}}

    def delete(self, namespace: str, name: str) -> None:
        self.deleted.append(name)
        self.jobs.pop(name, None)

    def termination_message(self, namespace: str, job: str) -> str:
        return self.messages.get(job, "")

    def finish(self, name: str, kind: str) -> None:
        self.jobs[name]["status"] = {"conditions": [{"type": kind, "status": "True"}]}


def resource(**spec: Any) -> NamespaceResource:
    return NamespaceResource.model_validate(
        {
            "metadata": {
                "name": "search",
                "namespace": "tenant-a",
                "uid": "uid-1",
                "generation": 1,
                "annotations": spec.pop("annotations", {}),
            },
            "spec": {
                "reprocess": "Auto",
                "plugins": [{"name": "image"}, {"name": "text", "vectors": [vec("text")]}],
                "collections": [{"id": "docs", "plugins": ["text", "image"]}],
                **spec,
            },
        }
    )


def vec(name: str) -> dict[str, Any]:
    return {"name": name, "size": 4, "distance": "Cosine"}


PLUGINS = {
    "image": PluginSpec.model_validate(
        {"vectors": [vec("image")], "backfill": {"jobTemplate": TEMPLATE}}
    )
}
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def one_pass(
    jobs: FakeJobs,
    status: NamespaceStatus,
    requests: list[Request],
    slots: backfills.Slots | None = None,
    active: dict[str, set[str]] | None = None,
    **spec: Any,
) -> list[Any]:
    bf = backfills.Backfill(
        store=jobs,
        slots=slots or backfills.Slots(),
        active=lambda: active or {},
        qdrant_url=lambda _: "http://qdrant:6333",
    )
    return backfills.run(bf, resource(**spec), status, requests, PLUGINS, T0)


def test_a_pass_creates_tracks_and_reports_a_job_to_success() -> None:
    jobs, status = FakeJobs(), NamespaceStatus()
    events = one_pass(jobs, status, [request(), Request("docs", "text", ("text",), False, "p1")])
    (name,) = jobs.jobs
    assert [e.reason for e in events] == ["BackfillStarted"]
    cond = status.condition("Reprocessed")
    assert cond is not None and (cond.status, cond.reason) == ("False", "BackfillRunning")
    assert one_pass(jobs, status, []) == []  # running: nothing new
    jobs.finish(name, "Complete")
    events = one_pass(jobs, status, [])
    assert [e.reason for e in events] == ["BackfillSucceeded"]
    cond = status.condition("Reprocessed")
    assert cond is not None and (cond.status, cond.reason) == ("True", "BackfillSucceeded")
    assert "text on docs" in cond.message  # the Manual pair is named
    assert status.condition("Ready") is None, "Reprocessed never sets Ready"


def test_a_failed_job_keeps_the_pods_message_and_the_annotation_retries_it() -> None:
    jobs, status = FakeJobs(), NamespaceStatus()
    one_pass(jobs, status, [request()])
    (name,) = jobs.jobs
    jobs.finish(name, "Failed")
    jobs.messages[name] = "collection tenant-a_search not found"
    events = one_pass(jobs, status, [])
    entry = (status.reprocess or [])[0]
    assert entry.state is S.FAILED and entry.message == "collection tenant-a_search not found"
    assert [e.reason for e in events] == ["BackfillFailed"]
    events = one_pass(jobs, status, [], annotations={RETRY_BACKFILL_ANNOTATION: "try-2"})
    assert [e.reason for e in events] == ["BackfillRetried", "BackfillStarted"]
    assert jobs.deleted == [name] and len(jobs.jobs) == 1
    assert (status.reprocess or [])[0].attempts == 2 and status.reprocess_retry == "try-2"


def test_a_restart_adopts_the_job_it_created_before() -> None:
    jobs, status = FakeJobs(), NamespaceStatus()
    one_pass(jobs, status, [request()])
    # the status write was lost (a crash): the next pass starts from the old status
    again = NamespaceStatus()
    from vectorschema.controller.backfill import remember

    again.reprocess = remember([], [request()], PLUGINS, resource())
    one_pass(jobs, again, [])
    assert len(jobs.jobs) == 1, "the deterministic name made it an adoption"
    assert (again.reprocess or [])[0].state is S.RUNNING


def test_a_template_the_api_server_refuses_fails_the_pair_with_its_message() -> None:
    jobs, status = FakeJobs(), NamespaceStatus()
    jobs.reject = "spec.template.spec.containers[0].image: Required value"
    events = one_pass(jobs, status, [request()])
    entry = (status.reprocess or [])[0]
    assert entry.state is S.FAILED and "Required value" in entry.message
    assert [e.reason for e in events] == ["BackfillFailed"]
    assert one_pass(jobs, status, []) == [], "told once"


def test_caps_across_namespaces_hold_while_the_watch_lags() -> None:
    slots = backfills.Slots(backfills.Caps(total=2, per_namespace=1))
    jobs, status = FakeJobs(), NamespaceStatus()
    one_pass(jobs, status, [request("docs")], slots=slots, collections=COLLECTIONS_SPEC)
    other = NamespaceStatus()
    one_pass(jobs, other, [request("photos")], slots=slots, collections=COLLECTIONS_SPEC)
    # per namespace 1: the first Job (not yet seen by the watch) holds tenant-a's slot
    assert [e.state for e in other.reprocess or []] == [S.PENDING]
    # another tenant may still start one; then the installation cap of 2 is reached
    with slots.window("tenant-b", {"tenant-a": set(jobs.jobs)}) as w:
        assert w.free == 1
        w.started.append("b1")
    with slots.window("tenant-c", {"tenant-a": set(jobs.jobs)}) as w:
        assert w.free == 0
    # the Job ended (the watch no longer lists it): the slot is free again
    with slots.window("tenant-a", {"tenant-b": {"b1"}}) as w:
        assert w.free == 1


COLLECTIONS_SPEC = [
    {"id": "docs", "plugins": ["image"]},
    {"id": "photos", "plugins": ["image"]},
]


def test_manual_spec_lists_nothing_and_clears_the_condition() -> None:
    jobs, status = FakeJobs(), NamespaceStatus()
    assert one_pass(jobs, status, [], reprocess="Manual") == []
    assert status.reprocess is None and status.condition("Reprocessed") is None
    assert Reprocess("Manual") is Reprocess.MANUAL
