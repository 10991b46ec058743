"""Backfill Jobs (issue 18) on the real control plane, without a node.

The operator creates, tracks, supersedes, retries and reports the Jobs; the control plane
here has no node, so no Pod runs. What a Pod would do is done in this process instead:
the example backfill program (examples/backfill/fill.py) fills the vectors through the
same embedded Qdrant the operator uses, and the Job's status is written by hand, as the
Job controller writes it. The Plugin's template sets `managedBy` to a name of ours, so
the built-in Job controller (when the control plane runs one) leaves these Jobs to us.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from qdrant_client import models as qm
from tests.e2e.operator_env import (
    KubectlFn,
    apply,
    condition,
    events,
    get,
    namespace_doc,
    private_plane,
    until,
)
from tests.e2e.test_kstatus import argo_health
from tests.gotools import built
from tests.seams import client_of

from devenv import ControlPlane
from vectorschema.qdrant.client import ClientGateway

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("operator")

TEXT = {"name": "text", "size": 8, "distance": "Cosine"}
IMAGE = {"name": "image", "size": 8, "distance": "Cosine"}
IMAGE2 = {"name": "image2", "size": 4, "distance": "Dot"}
#: Jobs of this manager are not the built-in Job controller's: their status is ours.
MANAGED_BY = "vectorschema.dev/e2e-by-hand"
TIMEOUT = 90.0


def fill_program() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fill", REPO / "examples/backfill/fill.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["backfill_fill"] = module
    spec.loader.exec_module(module)
    return module


def template(image: str = "vectorschema-backfill:e2e") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app.kubernetes.io/name": "image-backfill"}},
        "spec": {
            "managedBy": MANAGED_BY,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "fill",
                            "image": image,
                            "command": ["python", "/app/fill.py"],
                        }
                    ],
                }
            },
        },
    }


def plugin(name: str, *vectors: dict[str, Any], backfill: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"vectors": list(vectors)}
    if backfill:
        spec["backfill"] = {"jobTemplate": template()}
    return {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "kind": "Plugin",
        "metadata": {"name": name},
        "spec": spec,
    }


def entry(obj: dict[str, Any], plugin: str, collection: str = "docs") -> dict[str, Any]:
    for e in obj.get("status", {}).get("reprocess") or []:
        if e["plugin"] == plugin and e["collection"] == collection:
            return dict(e)
    return {}


def job(kubectl: KubectlFn, namespace: str, name: str) -> dict[str, Any]:
    return get(kubectl, "jobs.batch", name, namespace)


def jobs(kubectl: KubectlFn, namespace: str) -> list[dict[str, Any]]:
    out = kubectl("get", "jobs.batch", "-n", namespace, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_status(
    kubectl: KubectlFn, kind: str, namespace: str, name: str, status: dict[str, Any]
) -> None:
    """Merge `status` into the object's status subresource (as its controller would)."""
    patch = json.dumps({"status": status})
    kubectl(
        "patch", kind, name, "-n", namespace, "--subresource=status", "--type=merge", "-p", patch
    )


def finish(kubectl: KubectlFn, namespace: str, name: str, *, ok: bool) -> None:
    """Write the Job's terminal status as the Job controller would."""
    t = now()
    if ok:
        status = {
            "startTime": t,
            "completionTime": t,
            "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": t},
                {"type": "Complete", "status": "True", "lastTransitionTime": t},
            ],
        }
    else:
        status = {
            "startTime": t,
            "failed": 1,
            "conditions": [
                {
                    "type": "FailureTarget",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "lastTransitionTime": t,
                },
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "BackoffLimitExceeded",
                    "message": "Job has reached the specified backoff limit",
                    "lastTransitionTime": t,
                },
            ],
        }
    write_status(kubectl, "jobs.batch", namespace, name, status)


def failed_pod(kubectl: KubectlFn, namespace: str, job_name: str, message: str) -> None:
    """A Pod of the Job whose container terminated with `message`, as a kubelet reports."""
    pod = f"{job_name}-x{uuid.uuid4().hex[:5]}"
    apply(
        kubectl,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod,
                "namespace": namespace,
                "labels": {"batch.kubernetes.io/job-name": job_name, "job-name": job_name},
            },
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "fill", "image": "vectorschema-backfill:e2e"}],
            },
        },
    )
    t = now()
    status = {
        "phase": "Failed",
        "containerStatuses": [
            {
                "name": "fill",
                "image": "vectorschema-backfill:e2e",
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "message": message,
                        "startedAt": t,
                        "finishedAt": t,
                    }
                },
            }
        ],
    }
    write_status(kubectl, "pod", namespace, pod, status)


def env_of(job_body: dict[str, Any]) -> dict[str, Any]:
    (container,) = job_body["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def seed(qdrant: ClientGateway, collection: str, count: int) -> None:
    rng = [[((i * 7 + k) % 11) / 11.0 + 0.01 for k in range(8)] for i in range(count)]
    with client_of(qdrant) as client:
        client.upsert(
            collection,
            [
                qm.PointStruct(id=i, vector={"text": rng[i]}, payload={"n": i, "doc": f"d{i}"})
                for i in range(count)
            ],
        )


@pytest.fixture(scope="module")
def argocd() -> Path:
    """Argo CD's health script interpreter (gopher-lua), built from Go modules."""
    return built("argocdhealth")


@pytest.fixture
def names() -> dict[str, str]:
    """Plugin names unique to the test (Plugins are cluster-scoped)."""
    suffix = uuid.uuid4().hex[:6]
    return {"text": f"text-{suffix}", "image": f"image-{suffix}"}


def ready_namespace(
    kubectl: KubectlFn, namespace: str, names: dict[str, str], **extra: Any
) -> dict[str, Any]:
    """Plugins text (no backfill) and image (a backfill); a Namespace with text only."""
    apply(
        kubectl,
        plugin(names["text"], TEXT),
        plugin(names["image"], IMAGE, backfill=True),
    )
    spec = {
        "plugins": [{"name": names["text"]}],
        "collections": [{"id": "docs", "plugins": [names["text"], names["image"]]}],
        "reprocess": "Auto",
        **extra,
    }
    apply(kubectl, namespace_doc(namespace, "search", **spec))
    return until(
        kubectl,
        namespace,
        "search",
        lambda o: condition(o, "Ready").get("status") == "True",
        TIMEOUT,
        "Ready",
    )


def add_image(kubectl: KubectlFn, namespace: str, names: dict[str, str], **extra: Any) -> None:
    spec = {
        "plugins": [{"name": names["text"]}, {"name": names["image"]}],
        "collections": [{"id": "docs", "plugins": [names["text"], names["image"]]}],
        "reprocess": "Auto",
        **extra,
    }
    apply(kubectl, namespace_doc(namespace, "search", **spec))


def running_job(
    kubectl: KubectlFn, namespace: str, plugin: str, plan: str | None = None
) -> dict[str, Any]:
    def started(o: dict[str, Any]) -> bool:
        e = entry(o, plugin)
        return e.get("state") == "Running" and (plan is None or e.get("planFingerprint") != plan)

    return until(kubectl, namespace, "search", started, TIMEOUT, f"a running Job of {plugin}")


def test_an_in_place_add_under_auto_runs_the_plugins_job_and_reports_it(
    kubectl: KubectlFn,
    namespace: str,
    names: dict[str, str],
    qdrant: ClientGateway,
    argocd: Path,
) -> None:
    ready = ready_namespace(kubectl, namespace, names)
    collection = ready["status"]["collection"]
    assert not ready["status"].get("reprocess"), "a first creation runs no Job"
    seed(qdrant, collection, 500)
    with client_of(qdrant) as client:
        before = {p.id: p.payload for p in client.scroll(collection, limit=1000)[0]}

    add_image(kubectl, namespace, names)
    obj = running_job(kubectl, namespace, names["image"])
    e = entry(obj, names["image"])
    assert e["vectors"] == ["image"] and e["attempts"] == 1 and e["recreated"] is False
    assert e["planFingerprint"] == obj["status"]["lastReconfigure"]["planFingerprint"]
    assert condition(obj, "Ready")["status"] == "True", "Ready is about the schema only"
    reprocessed = condition(obj, "Reprocessed")
    assert (reprocessed["status"], reprocessed["reason"]) == ("False", "BackfillRunning")
    argo = argo_health(argocd, obj)
    assert argo["status"] == "Progressing" and argo["message"].startswith("BackfillRunning: ")

    body = job(kubectl, namespace, e["job"])
    owner = body["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Namespace",
        "search",
        obj["metadata"]["uid"],
    )
    env = env_of(body)
    assert env["VECTORSCHEMA_COLLECTION"] == collection
    assert env["VECTORSCHEMA_COLLECTION_ID"] == "docs"
    assert env["VECTORSCHEMA_VECTORS"] == "image"
    assert env["VECTORSCHEMA_PLAN"] == e["planFingerprint"]
    assert env["VECTORSCHEMA_RECREATED"] == "false"
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "vectorschema-backfill:e2e"
    )

    # What the Job's Pod runs, run here (no node): the example program, twice (idempotent).
    fill = fill_program()
    with client_of(qdrant) as client:
        assert fill.fill(client, collection, ["image"]) == (500, 0)
        assert fill.fill(client, collection, ["image"]) == (0, 500)
    finish(kubectl, namespace, e["job"], ok=True)

    done = until(
        kubectl,
        namespace,
        "search",
        lambda o: condition(o, "Reprocessed").get("status") == "True",
        TIMEOUT,
        "Reprocessed=True",
    )
    assert entry(done, names["image"])["state"] == "Succeeded"
    assert argo_health(argocd, done)["status"] == "Healthy"
    assert entry(done, names["text"]) == {}, "text's vectors were not touched"
    with client_of(qdrant) as client:
        assert client.count(collection, exact=True).count == 500
        after = client.scroll(collection, limit=1000, with_vectors=["image"])[0]
    assert {p.id: p.payload for p in after} == before
    assert all(p.vector and len(p.vector["image"]) == 8 for p in after)  # type: ignore[index,arg-type]
    # The story, in Events (timestamps have second precision: compare the set)
    told = {ev["reason"]: ev["message"] for ev in events(kubectl, namespace, "search")}
    assert {"Reconfigured", "BackfillStarted", "BackfillSucceeded"} <= set(told)
    assert e["job"] in told["BackfillStarted"] and "image" in told["BackfillStarted"]
    assert e["job"] in told["BackfillSucceeded"]


def test_a_failed_job_shows_its_pods_message_and_the_annotation_retries_it(
    kubectl: KubectlFn, namespace: str, names: dict[str, str], argocd: Path
) -> None:
    ready_namespace(kubectl, namespace, names)
    add_image(kubectl, namespace, names)
    e = entry(running_job(kubectl, namespace, names["image"]), names["image"])
    failed_pod(kubectl, namespace, e["job"], "backfill of image failed: model server unreachable")
    finish(kubectl, namespace, e["job"], ok=False)

    obj = until(
        kubectl,
        namespace,
        "search",
        lambda o: entry(o, names["image"]).get("state") == "Failed",
        TIMEOUT,
        "the entry Failed",
    )
    failed = entry(obj, names["image"])
    assert failed["message"] == "backfill of image failed: model server unreachable"
    reprocessed = condition(obj, "Reprocessed")
    assert (reprocessed["status"], reprocessed["reason"]) == ("False", "BackfillFailed")
    assert "model server unreachable" in reprocessed["message"]
    argo = argo_health(argocd, obj)
    assert argo["status"] == "Degraded" and "model server unreachable" in argo["message"]
    assert condition(obj, "Ready")["status"] == "True"

    kubectl(
        "annotate",
        "namespaces.vectorschema.dev",
        "search",
        "-n",
        namespace,
        "vectorschema.dev/retry-backfill=1",
    )
    retried = until(
        kubectl,
        namespace,
        "search",
        lambda o: (
            entry(o, names["image"]).get("attempts") == 2
            and entry(o, names["image"]).get("state") == "Running"
        ),
        TIMEOUT,
        "a second attempt",
    )
    second = entry(retried, names["image"])
    assert second["job"] != e["job"]
    until_gone(kubectl, namespace, e["job"])
    finish(kubectl, namespace, second["job"], ok=True)
    until(
        kubectl,
        namespace,
        "search",
        lambda o: condition(o, "Reprocessed").get("status") == "True",
        TIMEOUT,
        "Reprocessed=True after the retry",
    )
    reasons = {ev["reason"] for ev in events(kubectl, namespace, "search")}
    assert {"BackfillFailed", "BackfillRetried", "BackfillSucceeded"} <= reasons


def until_gone(kubectl: KubectlFn, namespace: str, name: str) -> None:
    from tests.e2e.conftest import wait_for

    def gone() -> bool:
        out = kubectl(
            "get", "jobs.batch", name, "-n", namespace, "--ignore-not-found", "-o", "name"
        )
        return out.stdout.strip() == ""

    wait_for(gone, TIMEOUT, f"Job {name} deleted")


def test_a_newer_plan_supersedes_the_running_job(
    kubectl: KubectlFn, namespace: str, names: dict[str, str]
) -> None:
    ready_namespace(kubectl, namespace, names)
    add_image(kubectl, namespace, names)
    first = entry(running_job(kubectl, namespace, names["image"]), names["image"])
    # the plugin gains a vector: a newer plan touches the same plugin's vectors
    apply(kubectl, plugin(names["image"], IMAGE, IMAGE2, backfill=True))
    obj = running_job(kubectl, namespace, names["image"], plan=first["planFingerprint"])
    second = entry(obj, names["image"])
    assert second["job"] != first["job"]
    assert second["vectors"] == ["image", "image2"], "the superseded Job's vectors are kept"
    until_gone(kubectl, namespace, first["job"])
    assert env_of(job(kubectl, namespace, second["job"]))["VECTORSCHEMA_VECTORS"] == "image,image2"
    reasons = {ev["reason"] for ev in events(kubectl, namespace, "search")}
    assert "BackfillSuperseded" in reasons


def test_a_tenant_cannot_change_what_the_job_runs(
    kubectl: KubectlFn, namespace: str, names: dict[str, str]
) -> None:
    ready_namespace(kubectl, namespace, names)
    # a tenant cannot put a template of its own in its Namespace spec
    refused = kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            namespace_doc(
                namespace,
                "search",
                plugins=[{"name": names["text"], "backfill": {"jobTemplate": template("evil")}}],
                reprocess="Auto",
            )
        ),
        check=False,
    )
    assert refused.returncode != 0 or "backfill" not in json.dumps(
        get(kubectl, "namespaces.vectorschema.dev", "search", namespace)["spec"]
    )
    add_image(kubectl, namespace, names)
    e = entry(running_job(kubectl, namespace, names["image"]), names["image"])
    # the tenant edits its spec (another collection id, a new ingestion collection)
    add_image(
        kubectl,
        namespace,
        names,
        collections=[
            {"id": "docs", "plugins": [names["text"], names["image"]]},
            {"id": "other", "plugins": [names["text"]]},
        ],
    )
    body = job(kubectl, namespace, e["job"])
    pod = body["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["containers"]] == ["vectorschema-backfill:e2e"]
    assert [c["command"] for c in pod["containers"]] == [["python", "/app/fill.py"]]

    # a Job forged under the next deterministic name is not adopted: it is replaced
    kubectl("delete", "jobs.batch", e["job"], "-n", namespace, "--wait=true")
    obj = until(
        kubectl,
        namespace,
        "search",
        lambda o: entry(o, names["image"]).get("attempts", 0) >= 2,
        TIMEOUT,
        "the disappeared Job started again",
    )
    again = job(kubectl, namespace, entry(obj, names["image"])["job"])
    assert again["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "vectorschema-backfill:e2e"
    )


def test_deleting_the_namespace_resource_collects_its_running_job(
    kubectl: KubectlFn, namespace: str, names: dict[str, str]
) -> None:
    ready_namespace(kubectl, namespace, names)
    add_image(kubectl, namespace, names)
    e = entry(running_job(kubectl, namespace, names["image"]), names["image"])
    kubectl("delete", "namespaces.vectorschema.dev", "search", "-n", namespace, "--wait=true")
    until_gone(kubectl, namespace, e["job"])
    assert jobs(kubectl, namespace) == []


# --- an operator restarted mid-Job (a process of its own, on a private control plane) -----


@pytest.fixture(scope="module")
def plane(
    control_plane: ControlPlane, kubectl: KubectlFn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A control plane of this module's own: only the operator processes below see it."""
    with private_plane(control_plane, kubectl, tmp_path_factory.mktemp("backfill-plane")) as own:
        yield own


def test_an_operator_restarted_mid_job_adopts_it_instead_of_starting_another(
    plane: ControlPlane, kubectl: KubectlFn, tmp_path: Path
) -> None:
    from devenv.operatorproc import OperatorProcess

    def k(*args: str, input: str | None = None) -> str:
        return kubectl(*args, input=input, kubeconfig=plane.kubeconfig).stdout

    def private(*args: str, **kw: Any) -> Any:
        return kubectl(*args, kubeconfig=plane.kubeconfig, **kw)

    env = {
        "KUBECONFIG": str(plane.kubeconfig),
        "QDRANT_PATH": str(tmp_path / "qdrant"),
        "VECTORSCHEMA_RESYNC_SECONDS": "2",
    }
    names = {"text": "text", "image": "image"}
    first = OperatorProcess(tmp_path / "operator-1.log", env=env).start()
    try:
        ready_namespace(private, "default", names)
        add_image(private, "default", names)
        e = entry(running_job(private, "default", names["image"]), names["image"])
        first.kill()  # a crash: no cleanup, no last status write
    finally:
        first.stop()

    second = OperatorProcess(tmp_path / "operator-2.log", env=env).start()
    try:
        # The Job ends while the new operator runs: it must report that Job (adopted), and
        # never have started a second one.
        finish(private, "default", e["job"], ok=True)
        done = until(
            private,
            "default",
            "search",
            lambda o: condition(o, "Reprocessed").get("status") == "True",
            TIMEOUT,
            "the restarted operator to report the Job",
        )
        after = entry(done, names["image"])
        assert (after["job"], after["attempts"], after["state"]) == (e["job"], 1, "Succeeded")
        listed = json.loads(k("get", "jobs.batch", "-n", "default", "-o", "json"))["items"]
        assert [j["metadata"]["name"] for j in listed] == [e["job"]], second.log_tail()
    finally:
        second.stop()
