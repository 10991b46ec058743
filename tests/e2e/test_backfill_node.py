"""Backfill Jobs on the local node (issue 18): the Job's Pod really runs.

The control plane with a node (`node_cluster`), the operator image (`make image`) imported
into its containerd, and qdrantlite (Qdrant's REST API over qdrant-client's local mode) in
a Pod behind a Service, as `make deploy` sets them up. The operator runs as a host process
against that cluster and that Qdrant. The Plugin's Job runs the operator image with a
different command: the example program `examples/backfill/fill.py`, mounted from a
ConfigMap in the tenant's namespace.

- A 500-point collection gets an in-place `image` vector under `reprocess: Auto`; the Job
  runs on the node; afterwards every point carries `image`, the point count and payloads
  are unchanged, `Reprocessed` is True, and the Events tell the story. No command is typed
  after `kubectl apply`.
- A program that fails: `Failed` with the termination message the kubelet read from the
  container, then a retry through the annotation runs a second Pod.
- Deleting the Namespace resource while its Job's Pod runs: the garbage collector takes
  the Job and its Pod with their owner.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models as qm
from tests.e2e.operator_env import KubectlFn, apply, condition, events, run_kubectl, until
from tests.seams import client_of

from devenv import ControlPlane
from vectorschema.qdrant.client import ClientGateway

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
#: Pods start, import qdrant-client and write 500 points on a shared, busy machine.
TIMEOUT = 300.0
TEXT = {"name": "text", "size": 8, "distance": "Cosine"}
IMAGE = {"name": "image", "size": 8, "distance": "Cosine"}
FILL_CONFIGMAP = "backfill-program"


@dataclass
class Cluster:
    plane: ControlPlane
    kubectl: KubectlFn
    image: str
    qdrant_url: str


@pytest.fixture(scope="module")
def cluster(
    node_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """The node cluster with the image, qdrantlite, our CRDs and the operator (a host
    process on the cluster's Qdrant)."""
    from deploy import Kube, deploy_qdrant
    from devenv.operatorproc import OperatorProcess
    from image import build_image

    assert node_cluster.node is not None
    workdir = tmp_path_factory.mktemp("backfill-node")

    def kubectl(*args: str, input: str | None = None, check: bool = True, **_: Any) -> Any:
        return run_kubectl(node_cluster.kubeconfig, *args, input=input, check=check)

    built = build_image()
    node_cluster.node.import_image(built.archive)
    qdrant_url = deploy_qdrant(Kube(node_cluster.kubeconfig), str(built.name), TIMEOUT)
    kubectl("apply", "-f", str(REPO / "crds"))
    kubectl(
        "wait", "--for=condition=Established", "crd/namespaces.vectorschema.dev",
        "crd/plugins.vectorschema.dev", "--timeout=60s",
    )  # fmt: skip
    operator = OperatorProcess(
        workdir / "operator.log",
        env={
            "KUBECONFIG": str(node_cluster.kubeconfig),
            "QDRANT_URL": qdrant_url,
            "VECTORSCHEMA_RESYNC_SECONDS": "5",
        },
    ).start()
    try:
        yield Cluster(node_cluster, kubectl, str(built.name), qdrant_url)
    finally:
        # Let the operator release what the tests left, then stop it: the next module's
        # operator (test_incluster's chart) must not find these objects.
        kubectl("delete", "namespaces.vectorschema.dev", "--all", "-A", "--wait=true",
                "--timeout=120s", check=False)  # fmt: skip
        kubectl("delete", "plugins.vectorschema.dev", "--all", "--wait=true", check=False)
        print(operator.log_tail(40))
        operator.stop()


@pytest.fixture
def tenant(cluster: Cluster) -> Iterator[str]:
    """A tenant namespace holding the backfill program (a ConfigMap the Plugin mounts)."""
    name = f"tenant-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    program = (REPO / "examples" / "backfill" / "fill.py").read_text()
    apply(
        cluster.kubectl,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": FILL_CONFIGMAP, "namespace": name},
            "data": {"fill.py": program},
        },
    )
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def job_template(image: str, command: list[str]) -> dict[str, Any]:
    """The Plugin's Job: the operator image with another command, hardened like the chart's
    Pods, the program mounted read-only from the tenant's ConfigMap."""
    return {
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": 600,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
                    "containers": [
                        {
                            "name": "fill",
                            "image": image,
                            "imagePullPolicy": "Never",
                            "command": command,
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{"name": "program", "mountPath": "/opt/backfill"}],
                        }
                    ],
                    "volumes": [{"name": "program", "configMap": {"name": FILL_CONFIGMAP}}],
                }
            },
        }
    }


def plugin(name: str, vector: dict[str, Any], template: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"vectors": [vector]}
    if template is not None:
        spec["backfill"] = {"jobTemplate": template}
    return {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "kind": "Plugin",
        "metadata": {"name": name},
        "spec": spec,
    }


def namespace(tenant: str, plugins: list[str], feeds: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "kind": "Namespace",
        "metadata": {"name": "catalog", "namespace": tenant},
        "spec": {
            "reprocess": "Auto",
            "plugins": [{"name": p} for p in plugins],
            "collections": [{"id": "products", "plugins": feeds}],
        },
    }


def entry(obj: dict[str, Any], plugin: str) -> dict[str, Any]:
    for e in obj.get("status", {}).get("reprocess") or []:
        if e["plugin"] == plugin:
            return dict(e)
    return {}


def ready(cluster: Cluster, tenant: str) -> dict[str, Any]:
    return until(
        cluster.kubectl,
        tenant,
        "catalog",
        lambda o: (
            condition(o, "Ready").get("status") == "True"
            and o["status"].get("observedGeneration") == o["metadata"]["generation"]
        ),
        TIMEOUT,
        "Ready",
    )


def test_an_in_place_add_is_filled_on_the_node_with_no_command_after_apply(
    cluster: Cluster, tenant: str
) -> None:
    suffix = uuid.uuid4().hex[:6]
    text, image = f"text-{suffix}", f"image-{suffix}"
    template = job_template(cluster.image, ["python", "/opt/backfill/fill.py"])
    apply(cluster.kubectl, plugin(text, TEXT, None), plugin(image, IMAGE, template))
    apply(cluster.kubectl, namespace(tenant, [text], [text, image]))
    collection = ready(cluster, tenant)["status"]["collection"]

    gateway = ClientGateway.open(url=cluster.qdrant_url)
    with client_of(gateway) as client:
        client.upsert(
            collection,
            [
                qm.PointStruct(
                    id=i,
                    vector={"text": [((i * 7 + k) % 11) / 11.0 + 0.01 for k in range(8)]},
                    payload={"sku": f"sku-{i}", "n": i},
                )
                for i in range(500)
            ],
            wait=True,
        )
        before = {p.id: p.payload for p in client.scroll(collection, limit=1000)[0]}
    assert len(before) == 500

    started = time.monotonic()
    apply(cluster.kubectl, namespace(tenant, [text, image], [text, image]))  # the only command
    done = until(
        cluster.kubectl,
        tenant,
        "catalog",
        lambda o: (
            condition(o, "Reprocessed").get("status") in ("True",)
            or entry(o, image).get("state") == "Failed"
        ),
        TIMEOUT,
        "the backfill Job to end",
    )
    e = entry(done, image)
    assert e["state"] == "Succeeded", json.dumps(done["status"], indent=2)
    print(f"\nin-place add to filled on the node: {time.monotonic() - started:.0f} s")
    assert condition(done, "Reprocessed")["reason"] == "BackfillSucceeded"
    assert condition(done, "Ready")["status"] == "True"
    job = json.loads(
        cluster.kubectl("get", "jobs.batch", e["job"], "-n", tenant, "-o", "json").stdout
    )
    assert job["status"].get("succeeded") == 1
    selector = f"batch.kubernetes.io/job-name={e['job']}"
    listed = cluster.kubectl("get", "pods", "-n", tenant, "-l", selector, "-o", "json")
    pods = json.loads(listed.stdout)["items"]
    assert pods and pods[0]["spec"]["nodeName"], "the Job's Pod ran on the node"
    log = cluster.kubectl("logs", "-n", tenant, pods[0]["metadata"]["name"]).stdout
    assert "filled image on 500 point(s), 0 already had them" in log, log

    with client_of(gateway) as client:
        assert client.count(collection, exact=True).count == 500
        after = client.scroll(collection, limit=1000, with_vectors=["image"])[0]
    assert {p.id: p.payload for p in after} == before
    assert all(isinstance(p.vector, dict) and len(p.vector["image"]) == 8 for p in after)

    told = {ev["reason"]: ev["message"] for ev in events(cluster.kubectl, tenant, "catalog")}
    assert {"Reconfigured", "BackfillStarted", "BackfillSucceeded"} <= set(told), told
    assert e["job"] in told["BackfillStarted"] and e["job"] in told["BackfillSucceeded"]


def test_a_failing_program_reports_its_termination_message_and_a_retry_runs_again(
    cluster: Cluster, tenant: str
) -> None:
    suffix = uuid.uuid4().hex[:6]
    text, image = f"text-{suffix}", f"image-{suffix}"
    failing = [
        "python",
        "-c",
        "import sys; open('/dev/termination-log', 'w').write('model server unreachable'); "
        "sys.exit(3)",
    ]
    apply(
        cluster.kubectl,
        plugin(text, TEXT, None),
        plugin(image, IMAGE, job_template(cluster.image, failing)),
    )
    apply(cluster.kubectl, namespace(tenant, [text], [text, image]))
    ready(cluster, tenant)
    apply(cluster.kubectl, namespace(tenant, [text, image], [text, image]))
    failed = until(
        cluster.kubectl,
        tenant,
        "catalog",
        lambda o: entry(o, image).get("state") == "Failed",
        TIMEOUT,
        "the Job to fail",
    )
    first = entry(failed, image)
    assert first["message"] == "model server unreachable"
    assert condition(failed, "Reprocessed")["reason"] == "BackfillFailed"

    cluster.kubectl(
        "annotate", "namespaces.vectorschema.dev", "catalog", "-n", tenant,
        "vectorschema.dev/retry-backfill=1",
    )  # fmt: skip
    again = until(
        cluster.kubectl,
        tenant,
        "catalog",
        lambda o: entry(o, image).get("attempts") == 2 and entry(o, image).get("state") == "Failed",
        TIMEOUT,
        "the retried Job to fail again",
    )
    second = entry(again, image)
    assert second["job"] != first["job"] and second["message"] == "model server unreachable"
    reasons = {ev["reason"] for ev in events(cluster.kubectl, tenant, "catalog")}
    assert {"BackfillStarted", "BackfillFailed", "BackfillRetried"} <= reasons


def test_deleting_the_namespace_resource_stops_its_running_job_and_pod(
    cluster: Cluster, tenant: str
) -> None:
    suffix = uuid.uuid4().hex[:6]
    text, image = f"text-{suffix}", f"image-{suffix}"
    slow = ["python", "-c", "import time; time.sleep(600)"]
    apply(
        cluster.kubectl,
        plugin(text, TEXT, None),
        plugin(image, IMAGE, job_template(cluster.image, slow)),
    )
    apply(cluster.kubectl, namespace(tenant, [text], [text, image]))
    ready(cluster, tenant)
    apply(cluster.kubectl, namespace(tenant, [text, image], [text, image]))
    running = until(
        cluster.kubectl,
        tenant,
        "catalog",
        lambda o: entry(o, image).get("state") == "Running",
        TIMEOUT,
        "the Job to start",
    )
    job = entry(running, image)["job"]
    selector = f"batch.kubernetes.io/job-name={job}"

    def pod_phases() -> list[str]:
        out = cluster.kubectl("get", "pods", "-n", tenant, "-l", selector, "-o", "json").stdout
        return [p.get("status", {}).get("phase", "") for p in json.loads(out)["items"]]

    from tests.e2e.conftest import wait_for

    wait_for(lambda: "Running" in pod_phases(), TIMEOUT, "the Job's Pod to run on the node")
    cluster.kubectl("delete", "namespaces.vectorschema.dev", "catalog", "-n", tenant, "--wait=true")

    def gone() -> bool:
        out = cluster.kubectl("get", "jobs.batch", "-n", tenant, "-o", "name").stdout
        return out.strip() == "" and pod_phases() == []

    wait_for(gone, TIMEOUT, "the Job and its Pod collected with their owner")
