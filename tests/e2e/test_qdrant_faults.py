"""200 Namespaces on a Qdrant that stops answering, beside Namespaces on a healthy one.

The operator runs as its own process on a control plane private to this module. Its
healthy server is the real embedded store (its default); the faulty server is a loopback
endpoint (`tests/faulty_qdrant.py`) that first answers, then blackholes connections,
resets them, and answers 503, then answers again. Shown here:

- the calls reaching the faulty server during each fault stay bounded (the breaker lets a
  few probes a second through, whatever the number of Namespaces);
- Namespaces on the healthy server keep reconciling (a spec change lands) during the fault;
- deletions finish within their bound, on both servers, during the fault;
- when the faults stop, every Namespace on the faulty server is Ready again, without a
  restart, within seconds (the breaker's recovery wakes them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.e2e.operator_env import Kubectl, private_plane
from tests.faulty_qdrant import FaultyQdrant, Mode

from devenv import ControlPlane

REPO = Path(__file__).resolve().parents[2]
KOPF = Path(sys.executable).parent / "kopf"
HANDLERS = "vectorschema.k8s.handlers"

FAULTY = 200  # Namespaces on the faulty server
HEALTHY = 10  # Namespaces on the embedded store
PHASE = 12.0  # seconds per fault mode
PROBE_INTERVAL = 0.5  # the breaker's default
MAX_IN_FLIGHT = 16  # the call pool's default
DELETE_BOUND = 30.0  # VECTORSCHEMA_DELETE_RETRIES x (delay + one call timeout), with slack
TEXT = {"name": "text", "vectors": [{"name": "text_v1", "size": 4, "distance": "Cosine"}]}
IMAGE = {"name": "image", "vectors": [{"name": "image_v1", "size": 4, "distance": "Dot"}]}


@pytest.fixture(scope="module")
def plane(
    control_plane: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A control plane of its own: the in-process operator of other modules never sees
    these objects."""
    with private_plane(control_plane, kubectl, tmp_path_factory.mktemp("faults-plane")) as own:
        yield own


class Cluster:
    def __init__(self, kubectl: Kubectl, plane: ControlPlane) -> None:
        self.kubectl, self.plane = kubectl, plane

    def run(self, *args: str, input: str | None = None) -> str:
        return self.kubectl(*args, input=input, kubeconfig=self.plane.kubeconfig).stdout

    def apply(self, docs: list[dict[str, Any]]) -> None:
        self.run("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    def items(self, namespace: str) -> dict[str, dict[str, Any]]:
        out = json.loads(self.run("get", "vns", "-n", namespace, "-o", "json"))
        return {o["metadata"]["name"]: o for o in out["items"]}


def doc(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "kind": "Namespace",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"deletionPolicy": "Delete", **spec},
    }


def ready(obj: dict[str, Any]) -> tuple[str, str]:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == "Ready":
            return c["status"], c["reason"]
    return "", ""


def reasons(objs: dict[str, dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter(ready(o) for o in objs.values())


def wait_until(check: Any, timeout: float, what: str, show: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s: {what}; {show and show()}")
        time.sleep(1.0)


@pytest.fixture
def faulty() -> Iterator[FaultyQdrant]:
    server = FaultyQdrant()
    yield server
    server.close()


def start_operator(plane: ControlPlane, store: Path, log: Path, faulty_url: str) -> Any:
    env = dict(os.environ)
    env.update(
        KUBECONFIG=str(plane.kubeconfig),
        QDRANT_PATH=str(store),
        VECTORSCHEMA_ALLOWED_QDRANT_URLS=faulty_url,
        VECTORSCHEMA_RESYNC_SECONDS="5",
        VECTORSCHEMA_QDRANT_TIMEOUT="2",
        VECTORSCHEMA_DELETE_RETRIES="3",
        VECTORSCHEMA_DELETE_RETRY_DELAY="1",
        VECTORSCHEMA_RECOVERY_SPREAD_SECONDS="5",
        # One tenant with 200 Namespaces on its own server: the admin allows it that many,
        # and the whole of that server's call slots (the bounds below are the server's).
        VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE="1000",
        VECTORSCHEMA_QDRANT_MAX_IN_FLIGHT_PER_TENANT=str(MAX_IN_FLIGHT),
    )
    return subprocess.Popen(
        [str(KOPF), "run", "-m", HANDLERS, "--all-namespaces", "--standalone"],
        env=env,
        stdout=log.open("a"),
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_failing_server_is_contained(
    plane: ControlPlane, kubectl: Kubectl, faulty: FaultyQdrant, tmp_path: Path
) -> None:
    k8s = Cluster(kubectl, plane)
    log = tmp_path / "operator.log"
    for ns in ("faulty", "healthy"):
        k8s.run("create", "namespace", ns)
    k8s.apply(
        [
            doc("faulty", f"t{i:03}", plugins=[TEXT], qdrant={"url": faulty.url})
            for i in range(FAULTY)
        ]
        + [doc("healthy", f"h{i:02}", plugins=[TEXT]) for i in range(HEALTHY)]
    )
    operator = start_operator(plane, tmp_path / "store", log, faulty.url)
    try:
        _scenario(k8s, faulty, log)
    finally:
        operator.terminate()
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait()


def _scenario(k8s: Cluster, faulty: FaultyQdrant, log: Path) -> None:
    def tail() -> str:
        return log.read_text()[-3000:]

    def all_ready(namespace: str, n: int, vectors: int = 1) -> bool:
        objs = k8s.items(namespace)
        return len(objs) == n and all(
            ready(o) == ("True", "Reconciled") and len(o["status"].get("vectors") or []) == vectors
            for o in objs.values()
        )

    # 1. Everything Ready on both servers.
    started = time.monotonic()
    wait_until(lambda: all_ready("faulty", FAULTY), 150, "faulty Ready", tail)
    print(f"{FAULTY} Namespaces Ready on the faulty server in {time.monotonic() - started:.0f}s")
    wait_until(lambda: all_ready("healthy", HEALTHY), 30, "healthy Ready", tail)
    assert len(faulty.collections) == FAULTY

    # 2. The faulty server stops answering: blackhole, then resets, then 503s.
    faulty.reset_hits()
    hits: dict[Mode, int] = {}
    elapsed: dict[Mode, float] = {}
    deleted_at = 0.0
    for mode in (Mode.BLACKHOLE, Mode.RESET, Mode.UNAVAILABLE):
        faulty.set_mode(mode)
        started = time.monotonic()
        if mode is Mode.BLACKHOLE:
            # the operator notices on its resync; every Namespace on it says so
            wait_until(
                lambda: reasons(k8s.items("faulty"))[("False", "QdrantUnavailable")] == FAULTY,
                60,  # each notices on its next resync; 200 status writes on a busy machine
                "faulty Namespaces report QdrantUnavailable",
                lambda: reasons(k8s.items("faulty")),
            )
            # healthy Namespaces keep reconciling: a spec change lands
            k8s.apply([doc("healthy", f"h{i:02}", plugins=[TEXT, IMAGE]) for i in range(HEALTHY)])
            wait_until(lambda: all_ready("healthy", HEALTHY, 2), 30, "healthy changed", tail)
        if mode is Mode.RESET:
            deleted_at = time.monotonic()
            names = [f"t{i:03}" for i in range(10)]
            k8s.run("delete", "vns", "-n", "faulty", "--wait=false", *names)
            k8s.run("delete", "vns", "-n", "healthy", "--wait=false", "h00", "h01")
        time.sleep(max(0.0, PHASE - (time.monotonic() - started)))
        hits[mode] = faulty.reset_hits()
        elapsed[mode] = time.monotonic() - started
        if mode is Mode.RESET:
            # deletions finished within their bound on both servers
            wait_until(
                lambda: (
                    len(k8s.items("faulty")) == FAULTY - 10
                    and len(k8s.items("healthy")) == HEALTHY - 2
                ),
                max(1.0, DELETE_BOUND - (time.monotonic() - deleted_at)),
                "deletions finished",
                tail,
            )
    # At most one probe per PROBE_INTERVAL, plus the calls in flight when the fault began.
    # Without the breaker, 200 Namespaces retrying make hundreds of calls per phase.
    bound = {m: elapsed[m] / PROBE_INTERVAL + MAX_IN_FLIGHT + 10 for m in hits}
    print(f"calls that reached the faulty server: {hits}, in {elapsed} s; bounds {bound}")
    assert all(hits[m] <= bound[m] for m in hits), (hits, bound)

    # 3. The faults stop: every Namespace on it is Ready again, without a restart.
    faulty.set_mode(Mode.OK)
    recovered_at = time.monotonic()
    wait_until(
        lambda: all_ready("faulty", FAULTY - 10),
        45,
        "faulty Namespaces Ready again",
        lambda: reasons(k8s.items("faulty")),
    )
    print(f"all Ready again {time.monotonic() - recovered_at:.0f}s after the faults stopped")
    assert all_ready("healthy", HEALTHY - 2, 2)
