"""Kill at every step: a real process death at each fault point of a multi-step plan, then
a restart that must finish it.

The plan (approved with ``confirm: true``) removes ``v1``, re-creates ``v2`` with a new
size and adds ``v3``, in place, on a collection holding points with known ids. The
operator (``kopf run``) is started with ``VECTORSCHEMA_FAILPOINT`` set to one fault point
and exits there (status 70, as after a SIGKILL: no clean-up):

- ``exit-after:write_intent``: the intent record (``status.operation``) is written, no
  Qdrant call made yet;
- ``exit-after:delete_vector`` / ``exit-after:create_vector``: after the first Qdrant call
  of that kind;
- ``exit-before:final_status``: every Qdrant call done, the final status not written.

A fresh operator must then converge: status at the current generation, Ready, its vectors
and ``lastReconfigure`` telling what happened, the live collection holding exactly the
spec's vectors, and every point still there (in-place vector changes never delete points).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models as qm
from tests.e2e.reliability import (
    OperatorProcess,
    Tenant,
    assert_qdrant_matches,
    private_plane,
    report,
    text_spec,
    wait_converged,
)
from tests.seams import client_of, forget

from devenv import ControlPlane
from vectorschema.controller import failpoints
from vectorschema.qdrant.pool import connect

pytestmark = pytest.mark.e2e

KILL_POINTS = {
    "write_intent": "exit-after:write_intent",
    "delete_vector": "exit-after:delete_vector",
    "create_vector": "exit-after:create_vector",
    "final_status": "exit-before:final_status",
}
POINTS = 40
BEFORE = text_spec(4, 5, 6)  # v0, v1, v2
AFTER = {"plugins": [{"name": "text", "vectors": [
    {"name": "v0", "size": 4, "distance": "Cosine"},
    {"name": "v2", "size": 7, "distance": "Cosine"},
    {"name": "v3", "size": 8, "distance": "Cosine"},
]}], "confirm": True}  # fmt: skip
CONVERGE = 90.0


@dataclass
class Setup:
    plane: ControlPlane
    tenant: Tenant
    store: Path
    logs: Path
    specs: dict[str, dict[str, Any]]

    def operator(self, log: str, failpoint: str | None = None) -> OperatorProcess:
        env = {failpoints.ENV: failpoint} if failpoint else {}
        return OperatorProcess(self.plane.kubeconfig, self.store, self.logs / log, env=env)


def point_ids(store: Path, collection: str) -> set[int]:
    gateway = connect(path=str(store))
    try:
        with client_of(gateway) as client:
            points, _ = client.scroll(collection, limit=10 * POINTS, with_vectors=False)
            return {int(p.id) for p in points}
    finally:
        forget(path=str(store))


@pytest.fixture(scope="module")
def setup(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("kills")
    with private_plane(control_plane.bin_dir, tmp / "plane") as plane:
        tenant = Tenant(plane.kubeconfig, f"kills-{uuid.uuid4().hex[:6]}")
        tenant.create_namespace()
        s = Setup(plane, tenant, tmp / "qdrant", tmp, {})
        op = s.operator("setup.log")
        try:
            for point in KILL_POINTS:
                s.specs[point] = BEFORE
                tenant.apply(point.replace("_", "-"), BEFORE)
            wait_converged(tenant, named(s.specs), CONVERGE, op)
        finally:
            op.stop()
        gateway = connect(path=str(s.store))
        with client_of(gateway) as client:
            for point in KILL_POINTS:
                vectors = {"v0": [0.1] * 4, "v1": [0.2] * 5, "v2": [0.3] * 6}
                client.upsert(
                    f"{tenant.kns}_{point.replace('_', '-')}",
                    points=[qm.PointStruct(id=i, vector=vectors) for i in range(POINTS)],
                )
        forget(path=str(s.store))
        yield s


def named(specs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {point.replace("_", "-"): spec for point, spec in specs.items()}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_killed_at_a_step_the_next_operator_finishes_the_plan(setup: Setup, point: str) -> None:
    name = point.replace("_", "-")
    collection = f"{setup.tenant.kns}_{name}"
    setup.specs[point] = AFTER
    setup.tenant.apply(name, AFTER)
    crashing = setup.operator(f"{point}-crash.log", KILL_POINTS[point])
    try:
        code = crashing.proc.wait(timeout=CONVERGE)
    finally:
        crashing.stop()
    assert code == failpoints.EXIT_CODE, f"no crash at {point}:\n{crashing.tail()}"

    op = setup.operator(f"{point}-restart.log")
    try:
        settle = wait_converged(setup.tenant, named(setup.specs), CONVERGE, op)
    finally:
        op.stop()
    obj = setup.tenant.get(name)
    status = obj["status"]
    assert "operation" not in status, status.get("operation")
    assert sorted(status["vectors"]) == ["v0", "v2", "v3"]
    last = status["lastReconfigure"]
    assert (last["vectorsRemoved"], last["vectorsReplaced"], last["vectorsAdded"]) == (
        ["v1"],
        ["v2"],
        ["v3"],
    ), last
    assert last["pointsDeleted"] == 0 and last["previousPointsCount"] == POINTS
    assert_qdrant_matches(setup.store, setup.tenant.kns, {name: AFTER})
    assert point_ids(setup.store, collection) == set(range(POINTS)), "points were lost"
    report(f"killed at {point}: converged {settle:.1f} s after the restart, 0 points lost")
