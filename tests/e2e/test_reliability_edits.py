"""Rapid edits, status conflicts and two replicas, on a private control plane.

- 50 successive spec edits to one Namespace within a few seconds converge to the last
  generation, with the vectors of the last spec in Qdrant.
- A storm of metadata writes during reconciles makes the operator's resourceVersion-guarded
  status writes fail with 409 Conflict (counted by the API server's own
  ``apiserver_request_total`` metric); they are retried and nothing stays Reconciling.
- Two replicas with kopf peering: only one acts. Each runs with
  ``VECTORSCHEMA_FAILPOINT=trace``, which logs every Qdrant call that changes a
  collection; the standby's log has none.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from tests.e2e.operator_env import run_kubectl
from tests.e2e.reliability import (
    REPO,
    OperatorProcess,
    Tenant,
    assert_qdrant_matches,
    converged,
    private_plane,
    report,
    soak,
    text_spec,
    wait_converged,
)

from devenv import ControlPlane
from devenv.probes import client_ssl_context, https_get
from vectorschema.controller import failpoints

pytestmark = pytest.mark.e2e

GROUP, VERSION, PLURAL = "vectorschema.dev", "v1alpha1", "namespaces"
EDITS = soak(50, 200)
CONVERGE = 120.0


@pytest.fixture(scope="module")
def plane(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    with private_plane(control_plane.bin_dir, tmp_path_factory.mktemp("edits-plane")) as own:
        yield own


@pytest.fixture(scope="module")
def api(plane: ControlPlane) -> Iterator[k8s.CustomObjectsApi]:
    api_client = k8s_config.new_client_from_config(config_file=str(plane.kubeconfig))  # type: ignore[no-untyped-call]
    try:
        yield k8s.CustomObjectsApi(api_client)
    finally:
        api_client.close()


def new_tenant(plane: ControlPlane) -> Tenant:
    tenant = Tenant(plane.kubeconfig, f"edits-{uuid.uuid4().hex[:6]}")
    tenant.create_namespace()
    return tenant


def status_conflicts(plane: ControlPlane) -> int:
    """409s the API server answered to status writes of our Namespaces, since it started."""
    pki = plane.pki_dir
    ctx = client_ssl_context(plane.ca_file, pki / "admin.crt", pki / "admin.key")
    code, body = https_get(plane.server, "/metrics", ctx, timeout=10)
    assert code == 200, body[:300]
    total = 0
    for line in body.decode().splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and 'code="409"' in line
            and f'group="{GROUP}"' in line
            and f'resource="{PLURAL}"' in line
            and 'subresource="status"' in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def patch_spec(api: k8s.CustomObjectsApi, tenant: Tenant, name: str, spec: dict[str, Any]) -> int:
    """A merge patch of the whole spec; returns the new generation."""
    obj = api.patch_namespaced_custom_object(
        GROUP, VERSION, tenant.kns, PLURAL, name, {"spec": spec}
    )
    return int(obj["metadata"]["generation"])


def spec_for(i: int) -> dict[str, Any]:
    """Edit ``i``: one more vector every 5 edits (never a removal), a new collection id."""
    spec = text_spec(*[4 + k for k in range(1 + i // 5)])
    spec["collections"] = [{"id": f"batch-{i}", "plugins": ["text"]}]
    return spec


def test_fifty_rapid_edits_converge_to_the_last_generation(
    plane: ControlPlane, api: k8s.CustomObjectsApi, tmp_path: Path
) -> None:
    tenant = new_tenant(plane)
    store = tmp_path / "qdrant"
    op = OperatorProcess(plane.kubeconfig, store, tmp_path / "operator.log")
    try:
        tenant.apply("storm", spec_for(0))
        wait_converged(tenant, {"storm": spec_for(0)}, CONVERGE, op)
        start = time.monotonic()
        generations = [patch_spec(api, tenant, "storm", spec_for(i)) for i in range(1, EDITS + 1)]
        burst = time.monotonic() - start
        assert generations == sorted(set(generations)), "each edit is a new generation"
        last = spec_for(EDITS)
        settle = wait_converged(tenant, {"storm": last}, CONVERGE, op)
        obj = tenant.get("storm")
        assert obj["status"]["observedGeneration"] == generations[-1]
        want = sorted(v["name"] for v in last["plugins"][0]["vectors"])
        assert sorted(obj["status"]["vectors"]) == want
        report(f"{EDITS} edits in {burst:.1f} s, converged {settle:.1f} s after")
    finally:
        op.stop()
    assert_qdrant_matches(store, tenant.kns, {"storm": last})


def test_status_conflicts_are_retried(
    plane: ControlPlane, api: k8s.CustomObjectsApi, tmp_path: Path
) -> None:
    tenant = new_tenant(plane)
    store = tmp_path / "qdrant"
    op = OperatorProcess(plane.kubeconfig, store, tmp_path / "operator.log")
    names = [f"busy-{i}" for i in range(3)]
    specs = {n: text_spec(4) for n in names}
    stop = threading.Event()
    writes = 0

    def storm(name: str) -> None:
        """Annotations at full speed: each bumps the resourceVersion, not the generation."""
        nonlocal writes
        while not stop.is_set():
            body = {"metadata": {"annotations": {"reliability/tick": str(writes)}}}
            api.patch_namespaced_custom_object(GROUP, VERSION, tenant.kns, PLURAL, name, body)
            writes += 1

    try:
        for n in names:
            tenant.apply(n, specs[n])
        before = status_conflicts(plane)
        threads = [threading.Thread(target=storm, args=(n,), daemon=True) for n in names]
        for thread in threads:
            thread.start()
        try:
            for round_ in range(soak(8, 24)):  # spec edits that each need a pass
                for n in names:
                    specs[n] = text_spec(*[4 + k for k in range(round_ + 2)])
                    patch_spec(api, tenant, n, specs[n])
                time.sleep(0.5)  # the storm goes on while the passes run
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        settle = wait_converged(tenant, specs, CONVERGE, op)
        conflicts = status_conflicts(plane) - before
        assert conflicts > 0, "the storm caused no 409 on status writes: the test proves nothing"
        assert all(converged(o) for o in tenant.all())
        report(
            f"{writes} metadata writes, {conflicts} status 409s retried, "
            f"converged {settle:.1f} s after"
        )
    finally:
        op.stop()
    assert_qdrant_matches(store, tenant.kns, specs)


def test_two_replicas_with_peering_never_both_act(plane: ControlPlane, tmp_path: Path) -> None:
    # kopf's peering CRDs, and the ClusterKopfPeering (as the Helm chart installs it).
    run_kubectl(plane.kubeconfig, "apply", "-f", str(REPO / "manifests" / "crds" / "kopf.dev.yaml"))
    run_kubectl(
        plane.kubeconfig,
        "wait",
        "--for=condition=Established",
        "crd/clusterkopfpeerings.kopf.dev",
        "--timeout=60s",
    )
    peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering"}
    run_kubectl(
        plane.kubeconfig,
        "apply",
        "-f",
        "-",
        input=json.dumps({**peering, "metadata": {"name": "vectorschema"}}),
    )
    tenant = new_tenant(plane)

    def peers() -> int:
        got = run_kubectl(
            plane.kubeconfig, "get", "clusterkopfpeering", "vectorschema", "-o", "json", check=False
        )
        return len(json.loads(got.stdout).get("status") or {}) if got.returncode == 0 else 0

    def start(priority: int, count: int) -> OperatorProcess:
        op = OperatorProcess(
            plane.kubeconfig,
            tmp_path / f"qdrant-{priority}",
            tmp_path / f"operator-{priority}.log",
            args=("--peering=vectorschema", f"--priority={priority}"),
            env={failpoints.ENV: failpoints.TRACE},
        )
        deadline = time.monotonic() + 60
        while peers() < count:
            op.assert_alive()
            assert time.monotonic() < deadline, f"replica {priority} never announced itself"
            time.sleep(0.5)
        return op

    # The serving replica first, then the standby (a rolling start). Two replicas started
    # at the same instant both serve until each has seen the other
    # (docs/explanation/reliability.md).
    replicas: dict[int, OperatorProcess] = {}
    try:
        replicas[200] = start(200, 1)
        replicas[100] = start(100, 2)
        steps: list[dict[str, Any]] = [
            {**text_spec(4), "confirm": True},  # create_collection (or delete_vector x2)
            {**text_spec(4, 5, 6), "confirm": True},  # create_vector x2
            {**text_spec(4, 5), "confirm": True},  # delete_vector
            {**text_spec(4, 6), "strategy": "Recreate", "confirm": True},  # recreate
        ]
        for _ in range(soak(1, 5)):
            for spec in steps:
                tenant.apply("shared", spec)
                wait_converged(tenant, {"shared": spec}, CONVERGE, replicas[200])
                replicas[100].assert_alive()
        calls = {p: op.count(failpoints.TRACE_LINE) for p, op in replicas.items()}
        assert calls[200] >= 5 and calls[100] == 0, (calls, replicas[100].tail())
        # The serving replica leaves: the standby takes over and acts.
        replicas[200].stop()
        last = {**text_spec(4, 6, 8), "confirm": True}
        tenant.apply("shared", last)
        wait_converged(tenant, {"shared": last}, CONVERGE, replicas[100])
        assert replicas[100].count(failpoints.TRACE_LINE) > 0
    finally:
        for op in replicas.values():
            op.stop()
    report(f"two replicas: Qdrant calls by priority {calls}, then a takeover")
