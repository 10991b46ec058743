"""Randomized kill cycles: SIGKILL the operator at random moments, again and again, while
random spec changes stream into several Namespaces.

Each cycle: a few random changes (vectors added or removed, the strategy flipped, some plans
approved and others left waiting, a resource deleted or created again), then an operator
process (``kopf run``) that is killed with SIGKILL after a random 0.5-4 s. The seed of the
random generator is printed, so a failure can be replayed (``VECTORSCHEMA_CYCLES_SEED``).

At the end one operator runs until every Namespace (all created again, every plan
approved, strategy Auto) has converged. Then, with the operator stopped: each collection
holds exactly its spec's vectors, no operation record is left, and every one of the 30
known points is still there in every collection that no approved Recreate could have
emptied (always at least ``c0``, whose Recreate plans are never approved). ``make test``
runs 20 cycles, ``make soak`` 200.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import models as qm
from tests.e2e.operator_env import run_kubectl
from tests.e2e.reliability import (
    OperatorProcess,
    Tenant,
    assert_qdrant_matches,
    private_plane,
    report,
    soak,
    wait_converged,
)
from tests.seams import client_of, forget

from devenv import ControlPlane
from vectorschema.qdrant.pool import connect

pytestmark = pytest.mark.e2e

CYCLES = soak(20, 200)
NAMES = ("c0", "c1", "c2")
#: Never gets an approved Recreate, so the point check always has a collection to check.
KEEPER = "c0"
POINTS = 30
SIZES = {"v0": 4, "v1": 5, "v2": 6, "v3": 7}
CONVERGE = 120.0


def spec_of(vectors: list[str], strategy: str, confirm: bool) -> dict[str, Any]:
    return {
        "plugins": [
            {
                "name": "text",
                "vectors": [{"name": v, "size": SIZES[v], "distance": "Cosine"} for v in vectors],
            }
        ],
        "strategy": strategy,
        "confirm": confirm,
        "adopt": True,  # a resource created again takes its retained collection back
    }


BASE = spec_of(["v0", "v1"], "Auto", True)


@pytest.fixture(scope="module")
def plane(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    with private_plane(control_plane.bin_dir, tmp_path_factory.mktemp("cycles")) as own:
        yield own


def exists(tenant: Tenant, name: str) -> bool:
    got = run_kubectl(tenant.kubeconfig, "get", "vns", "-n", tenant.kns, name, check=False)
    return got.returncode == 0


def test_random_kill_cycles_converge_and_lose_no_point(plane: ControlPlane, tmp_path: Path) -> None:
    seed = int(os.environ.get("VECTORSCHEMA_CYCLES_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    tenant = Tenant(plane.kubeconfig, f"cycles-{uuid.uuid4().hex[:6]}")
    tenant.create_namespace()
    store = tmp_path / "qdrant"

    def operator(log: str) -> OperatorProcess:
        return OperatorProcess(plane.kubeconfig, store, tmp_path / log)

    # Three collections with 30 known points each.
    specs = {name: BASE for name in NAMES}
    op = operator("setup.log")
    try:
        for name in NAMES:
            tenant.apply(name, BASE)
        wait_converged(tenant, specs, CONVERGE, op)
    finally:
        op.stop()
    gateway = connect(path=str(store))
    with client_of(gateway) as client:
        for name in NAMES:
            client.upsert(
                f"{tenant.kns}_{name}",
                points=[
                    qm.PointStruct(id=i, vector={"v0": [0.1] * 4, "v1": [0.2] * 5})
                    for i in range(POINTS)
                ],
            )
    forget(path=str(store))

    may_lose: set[str] = set()  # collections an approved Recreate may have emptied
    deleted: set[str] = set()
    actions = 0
    for cycle in range(CYCLES):
        for name in rng.sample(NAMES, rng.randint(1, len(NAMES))):
            if name in deleted:
                if not exists(tenant, name):  # released: create it again
                    deleted.discard(name)
                    tenant.apply(name, specs[name])
                    actions += 1
                continue
            if rng.random() < 0.1:
                run_kubectl(
                    tenant.kubeconfig, "delete", "vns", "-n", tenant.kns, name, "--wait=false"
                )
                deleted.add(name)
                actions += 1
                continue
            vectors = ["v0", *sorted(rng.sample(["v1", "v2", "v3"], rng.randint(0, 3)))]
            strategy = rng.choice(["Auto", "Auto", "Recreate"])
            confirm = rng.random() < 0.5
            if name == KEEPER and strategy == "Recreate":
                confirm = False  # its Recreate plans wait: its points must all survive
            specs[name] = spec_of(vectors, strategy, confirm)
            if strategy == "Recreate" and confirm:
                may_lose.add(name)
            tenant.apply(name, specs[name])
            actions += 1
        op = operator(f"cycle-{cycle}.log")
        time.sleep(rng.uniform(0.5, 4.0))  # the random moment of the kill
        op.assert_alive()
        op.kill()

    # The end: one operator, every resource back, every plan approved in place.
    op = operator("final.log")
    try:
        for name in list(deleted):
            deadline = time.monotonic() + CONVERGE
            while exists(tenant, name):
                assert time.monotonic() < deadline, f"{name} was never released"
                time.sleep(0.5)
        for name in NAMES:
            specs[name] = {**specs[name], "strategy": "Auto", "confirm": True}
            tenant.apply(name, specs[name])
        settle = wait_converged(tenant, specs, CONVERGE, op)
    finally:
        op.stop()
    assert KEEPER not in may_lose
    for name in NAMES:
        assert "operation" not in tenant.get(name)["status"], name
    assert_qdrant_matches(store, tenant.kns, specs)
    gateway = connect(path=str(store))
    try:
        with client_of(gateway) as client:
            for name in sorted(set(NAMES) - may_lose):
                points, _ = client.scroll(f"{tenant.kns}_{name}", limit=10 * POINTS)
                assert {int(p.id) for p in points} == set(range(POINTS)), f"{name} lost points"
    finally:
        forget(path=str(store))
    report(
        f"{CYCLES} SIGKILL cycles (seed {seed}), {actions} random changes: converged "
        f"{settle:.1f} s after the last restart; 0 of {POINTS} points lost in the "
        f"{len(set(NAMES) - may_lose)} collection(s) no approved Recreate touched"
    )
