"""A real crash in the middle of a destructive plan, and the restart that finishes it.

The operator runs as a separate process (`kopf run`), on a control plane private to this
module (so the in-process operator of the other modules never sees these objects). A
failpoint makes it exit, as a kill would, right after it dropped the collection and before
it created it again. A new operator process must then finish the plan without asking for
approval again, and report the outcome recorded before the crash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from qdrant_client import models as qm
from tests.e2e.operator_env import Kubectl, private_plane
from tests.seams import client_of, forget

from devenv import ControlPlane
from vectorschema.controller import failpoints
from vectorschema.qdrant.pool import connect

REPO = Path(__file__).resolve().parents[2]
KOPF = Path(sys.executable).parent / "kopf"
TEXT = {"name": "text", "vectors": [{"name": "text_v1", "size": 8, "distance": "Cosine"}]}
IMAGE = {"name": "image", "vectors": [{"name": "image_v1", "size": 4, "distance": "Dot"}]}


@pytest.fixture(scope="module")
def plane(
    control_plane: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A second control plane (binaries from the session's build), with our CRDs."""
    with private_plane(control_plane, kubectl, tmp_path_factory.mktemp("crash-plane")) as own:
        yield own


def start_operator(
    plane: ControlPlane, store: Path, log: Path, **env: str
) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if k != failpoints.ENV}
    full.update(
        KUBECONFIG=str(plane.kubeconfig),
        QDRANT_PATH=str(store),
        VECTORSCHEMA_RESYNC_SECONDS="2",
        **env,
    )
    return subprocess.Popen(
        [str(KOPF), "run", "-m", "vectorschema.k8s.handlers", "--all-namespaces", "--standalone"],
        env=full,
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Cluster:
    """kubectl on the private control plane, for this test's one Namespace."""

    def __init__(self, kubectl: Kubectl, plane: ControlPlane) -> None:
        self.kubectl, self.plane = kubectl, plane

    def run(self, *args: str, input: str | None = None) -> str:
        return self.kubectl(*args, input=input, kubeconfig=self.plane.kubeconfig).stdout

    def vns(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.run("get", "vns", "crash", "-o", "json"))
        return result

    def apply(self, spec: dict[str, Any]) -> None:
        doc = {
            "apiVersion": "vectorschema.dev/v1alpha1",
            "kind": "Namespace",
            "metadata": {"name": "crash", "namespace": "default"},
            "spec": spec,
        }
        self.run("apply", "-f", "-", input=yaml.safe_dump(doc))


def ready(obj: dict[str, Any]) -> dict[str, Any]:
    conds = obj.get("status", {}).get("conditions", [])
    return next((c for c in conds if c["type"] == "Ready"), {})


def test_a_crash_mid_recreate_is_finished_by_the_next_operator(
    plane: ControlPlane, kubectl: Kubectl, wait_for: Any, tmp_path: Path
) -> None:
    k8s = Cluster(kubectl, plane)
    store, log = tmp_path / "qdrant", tmp_path / "operator.log"
    collection = "default_crash"
    spec: dict[str, Any] = {
        "plugins": [TEXT],
        "collections": [{"id": "col_a", "plugins": ["text", "image"]}],
        "strategy": "Recreate",
    }

    # 1. A first operator creates the collection; then it stops.
    first = start_operator(plane, store, log)
    try:
        k8s.apply(spec)
        wait_for(lambda: ready(k8s.vns()).get("status") == "True", 60, "Ready", 0.5)
    finally:
        stop(first)

    # 2. 30 points are ingested while no operator runs (the store is single-process).
    gateway = connect(path=str(store))
    with client_of(gateway) as client:
        client.upsert(
            collection,
            points=[qm.PointStruct(id=i, vector={"text_v1": [1.0] * 8}) for i in range(30)],
        )
    forget(path=str(store))

    # 3. An approved recreate; the operator dies right after dropping the collection.
    spec["plugins"] = [TEXT, IMAGE]
    spec["confirm"] = True
    k8s.apply(spec)
    crashing = start_operator(plane, store, log, **{failpoints.ENV: "exit-after:delete_collection"})
    try:
        assert crashing.wait(timeout=90) == failpoints.EXIT_CODE, log.read_text()[-3000:]
    finally:
        stop(crashing)
    obj = k8s.vns()
    assert obj["status"]["operation"]["result"]["previousPointsCount"] == 30
    assert ready(obj)["reason"] == "Applying"
    gateway = connect(path=str(store))
    assert gateway.observe(collection) is None  # dropped, not yet re-created
    forget(path=str(store))

    # 4. The next operator finishes the plan and reports what was recorded.
    def finished() -> dict[str, Any] | None:
        o = k8s.vns()
        return o if ready(o).get("status") == "True" and "operation" not in o["status"] else None

    def resumed_event() -> bool:
        events = json.loads(
            k8s.run("get", "events", "--field-selector", "involvedObject.name=crash", "-o", "json")
        )["items"]
        return any(e["reason"] == "OperationResumed" for e in events)

    last = start_operator(plane, store, log)
    try:
        obj = wait_for(finished, 60, "the interrupted plan finished", 0.5)
        # The Event is posted after the status write: wait for it before stopping.
        wait_for(resumed_event, 30, "the OperationResumed Event", 0.5)
    finally:
        stop(last)
    report = obj["status"]["lastReconfigure"]
    assert report["status"] == "reconfigured"
    assert report["previousPointsCount"] == 30
    assert report["pointsDeleted"] == 30
    assert report["vectorsAdded"] == ["image_v1"]
    gateway = connect(path=str(store))
    live = gateway.observe(collection)
    forget(path=str(store))
    assert live is not None and sorted(live.names) == ["image_v1", "text_v1"]
    assert live.points_count == 0
    assert resumed_event()
