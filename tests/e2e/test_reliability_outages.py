"""The operator survives its API server going away: kube-apiserver and etcd outages, cut
watch connections, and a forced 410 Gone, without a restart.

One operator process (``kopf run``) serves the whole module on a private control plane,
talking to kube-apiserver through a loopback TCP proxy (:class:`devenv.faults.TcpProxy`)
so its connections can be cut without touching the API server. The test's own kubectl
goes straight to the API server, so changes can be made while the operator is cut off.
The resync interval is 600 s: what the operator catches up on, it learns from its watches,
not from a timer.

After every fault: every resource converges (Ready at its current generation, not
Reconciling, not Stalled) with the specs written during or after the fault, and the
operator is the same process. At the end, with the operator stopped, each Qdrant
collection holds exactly the vectors its spec asks for.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.reliability import (
    OperatorProcess,
    Tenant,
    assert_qdrant_matches,
    private_plane,
    report,
    soak,
    text_spec,
    wait_converged,
)

from devenv import ControlPlane
from devenv.faults import TcpProxy, compact_etcd, proxied_kubeconfig

pytestmark = pytest.mark.e2e

#: Seconds each outage lasts (the issue asks for 10-30 s).
OUTAGE = soak(10, 30)
#: Rounds of each fault.
ROUNDS = soak(1, 3)
#: How a component is stopped: killed at once (a crash) in the short run; SIGTERM with
#: a 10 s grace (a clean shutdown, then a kill) in the soak.
GRACE = soak(0, 10)
CONVERGE = 120.0


class World:
    """The module's control plane, proxy, operator, and the specs the tests wrote."""

    def __init__(self, plane: ControlPlane, proxy: TcpProxy, op: OperatorProcess, store: Path):
        self.plane, self.proxy, self.op, self.store = plane, proxy, op, store
        self.kns = f"outage-{uuid.uuid4().hex[:6]}"
        self.tenant = Tenant(plane.kubeconfig, self.kns)
        self.specs: dict[str, dict[str, Any]] = {}
        self.serial = 0

    def write(self, name: str, spec: dict[str, Any]) -> None:
        self.tenant.apply(name, spec)
        self.specs[name] = spec

    def churn(self, label: str) -> None:
        """A change to the three oldest resources (a vector added) and one new resource."""
        for name, spec in list(self.specs.items())[:3]:
            sizes = [v["size"] for v in spec["plugins"][0]["vectors"]]
            self.write(name, text_spec(*sizes, 4 + len(sizes)))
        self.serial += 1
        self.write(f"{label}-{self.serial}", text_spec(8))

    def converge(self, what: str = "") -> float:
        seconds = wait_converged(self.tenant, self.specs, CONVERGE, self.op)
        report(f"{what or 'start'}: converged {seconds:.1f} s after")
        self.op.assert_alive()
        assert self.op.pid == self.first_pid, "the operator was restarted"
        return seconds

    first_pid = 0


@pytest.fixture(scope="module")
def world(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("outages")
    with private_plane(control_plane.bin_dir, tmp / "plane") as plane:
        with TcpProxy.to(plane.server) as proxy:
            kubeconfig = proxied_kubeconfig(plane, proxy.port, tmp / "proxied.kubeconfig")
            op = OperatorProcess(kubeconfig, tmp / "qdrant", tmp / "operator.log")
            w = World(plane, proxy, op, tmp / "qdrant")
            w.first_pid = op.pid
            try:
                w.tenant.create_namespace()
                for i in range(3):
                    w.write(f"r{i}", text_spec(4))
                w.converge()
                yield w
            finally:
                op.stop()
        assert_qdrant_matches(w.store, w.kns, w.specs)


def test_kube_apiserver_outage(world: World) -> None:
    for _ in range(ROUNDS):
        world.churn("before-apiserver-stop")  # in flight when the API server goes away
        world.plane.stop_component("kube-apiserver", grace=GRACE)
        time.sleep(OUTAGE)  # the outage itself: nothing to wait for
        world.op.assert_alive()
        world.plane.start_component("kube-apiserver")
        world.churn("after-apiserver-start")
        world.converge(f"kube-apiserver down {OUTAGE} s")


def test_etcd_outage(world: World) -> None:
    for _ in range(ROUNDS):
        world.churn("before-etcd-stop")
        world.plane.stop_component("etcd", grace=GRACE)
        time.sleep(OUTAGE)
        world.op.assert_alive()
        world.plane.start_component("etcd")
        world.churn("after-etcd-start")
        world.converge(f"etcd down {OUTAGE} s")


def test_watch_connections_cut(world: World) -> None:
    for _ in range(ROUNDS):
        assert world.proxy.cut() > 0  # the operator's watches were open
        world.proxy.refuse()  # and it cannot reconnect for a while
        world.churn("while-cut")
        time.sleep(OUTAGE / 2)
        world.proxy.resume()
        world.converge(f"watches cut, refused {OUTAGE / 2:.0f} s")


def test_410_gone_after_compaction(world: World) -> None:
    """Changes made while the operator is cut off, then etcd compacted past its watch
    position and the API server restarted (an empty watch cache): its watches resume from
    a resourceVersion that no longer exists, get 410 Gone, and must re-list."""
    restarts = world.op.count("Restarting the watch-stream")
    world.proxy.refuse()
    world.churn("before-compaction")
    compact_etcd(world.plane)
    world.plane.stop_component("kube-apiserver", grace=0)
    world.plane.start_component("kube-apiserver")
    world.churn("after-compaction")
    world.proxy.resume()
    world.converge("410 Gone")
    assert world.op.count("Restarting the watch-stream") > restarts, "no 410 was seen"
