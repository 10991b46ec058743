"""Shared by the reliability modules: a private control plane, the operator as a process,
and the convergence checks every fault test ends with.

The operator runs as ``kopf run`` in a child process (like ``test_crash.py``), so that a
fault in the API server or etcd, a cut connection or a kill hits a real, separate
operator, and "without a restart" can be checked by its PID. It uses the embedded Qdrant
on a temp path; a local-mode store is locked by one process, so Qdrant is inspected only
while no operator runs (:func:`observe_collections`).

``VECTORSCHEMA_SOAK=1`` (``make soak``) selects the long variants: longer outages and more
rounds; ``make test`` runs the short ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from tests.e2e.operator_env import run_kubectl
from tests.seams import forget

from devenv import ControlPlane
from vectorschema.controller import failpoints
from vectorschema.core.schema import ObservedCollection
from vectorschema.qdrant.pool import connect

REPO = Path(__file__).resolve().parents[2]
KOPF = Path(sys.executable).parent / "kopf"
HANDLERS = "vectorschema.k8s.handlers"
SOAK = os.environ.get("VECTORSCHEMA_SOAK") == "1"
API_VERSION = "vectorschema.dev/v1alpha1"


def report(line: str) -> None:
    """A measured figure, on the real stdout (``-s`` shows it; kopf's in-process test runner
    swaps ``sys.stdout`` for the whole session)."""
    out = sys.__stdout__
    if out is not None:
        out.write(f"reliability: {line}\n")
        out.flush()


def soak(short: int, long: int) -> int:
    """``short`` in ``make test``, ``long`` in ``make soak``."""
    return long if SOAK else short


@contextlib.contextmanager
def private_plane(bin_dir: Path, state_dir: Path) -> Iterator[ControlPlane]:
    """A control plane of its own (faults here cannot disturb other modules), CRDs in."""
    plane = ControlPlane(state_dir, bin_dir)
    plane.start()
    try:
        run_kubectl(plane.kubeconfig, "apply", "-f", str(REPO / "crds"))
        run_kubectl(
            plane.kubeconfig,
            "wait",
            "--for=condition=Established",
            "crd/namespaces.vectorschema.dev",
            "crd/plugins.vectorschema.dev",
            "--timeout=60s",
        )
        yield plane
    finally:
        plane.stop()


class OperatorProcess:
    """``kopf run -m <handlers> --all-namespaces`` as a child process, logging to a file."""

    def __init__(
        self,
        kubeconfig: Path,
        store: Path,
        log: Path,
        *,
        args: tuple[str, ...] = ("--standalone",),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.log = log
        full = {k: v for k, v in os.environ.items() if k != failpoints.ENV}
        full.update(
            KUBECONFIG=str(kubeconfig),
            QDRANT_PATH=str(store),
            VECTORSCHEMA_RESYNC_SECONDS="600",
            **(env or {}),
        )
        cmd = [str(KOPF), "run", "-m", HANDLERS, "--all-namespaces", "--verbose", *args]
        with log.open("a") as out:
            self.proc = subprocess.Popen(
                cmd, env=full, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, text=True
            )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def assert_alive(self) -> None:
        assert self.alive(), f"the operator exited ({self.proc.returncode}):\n{self.tail()}"

    def kill(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def count(self, needle: str) -> int:
        return self.text().count(needle)

    def tail(self, chars: int = 4000) -> str:
        return self.text()[-chars:]


def namespace_doc(kns: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Namespace",
        "metadata": {"name": name, "namespace": kns},
        "spec": dict(spec),
    }


def text_spec(*sizes: int) -> dict[str, Any]:
    """A spec with one inline plugin holding one dense vector per size (v0, v1, ...)."""
    vectors = [{"name": f"v{i}", "size": s, "distance": "Cosine"} for i, s in enumerate(sizes)]
    return {"plugins": [{"name": "text", "vectors": vectors}]}


class Tenant:
    """kubectl on one control plane, within one Kubernetes namespace."""

    def __init__(self, kubeconfig: Path, kns: str) -> None:
        self.kubeconfig, self.kns = kubeconfig, kns

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return run_kubectl(self.kubeconfig, *args, input=input).stdout

    def create_namespace(self) -> None:
        self.kubectl("create", "namespace", self.kns)

    def apply(self, name: str, spec: Mapping[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(namespace_doc(self.kns, name, spec)))

    def get(self, name: str) -> dict[str, Any]:
        out = self.kubectl("get", "vns", "-n", self.kns, name, "-o", "json")
        obj: dict[str, Any] = json.loads(out)
        return obj

    def all(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = json.loads(
            self.kubectl("get", "vns", "-n", self.kns, "-o", "json")
        )["items"]
        return items


def condition(obj: Mapping[str, Any], type_: str) -> dict[str, Any]:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return {}


def converged(obj: Mapping[str, Any]) -> bool:
    """Ready at the current generation, nothing in progress, nothing stalled."""
    status = obj.get("status", {})
    return (
        status.get("observedGeneration") == obj["metadata"]["generation"]
        and condition(obj, "Ready").get("status") == "True"
        and condition(obj, "Reconciling").get("status") != "True"
        and condition(obj, "Stalled").get("status") != "True"
    )


def vectors_of(spec: Mapping[str, Any]) -> dict[str, int | None]:
    """Vector name -> size, over every inline plugin of ``spec`` (defaults ignored)."""
    return {v["name"]: v.get("size") for p in spec.get("plugins", []) for v in p["vectors"]}


def wait_converged(
    tenant: Tenant,
    expected: Mapping[str, Mapping[str, Any]],
    timeout: float,
    operator: OperatorProcess | None = None,
) -> float:
    """Wait until every resource of ``tenant`` converged with exactly the ``expected`` specs
    (name -> spec, compared on plugins); return the seconds it took. On timeout, fail with
    the state of each resource and the operator's last log lines."""
    start = time.monotonic()
    deadline = start + timeout
    last: dict[str, Any] = {}
    while True:
        if operator is not None:
            operator.assert_alive()
        try:
            items = {o["metadata"]["name"]: o for o in tenant.all()}
        except AssertionError as exc:  # the API server may still be coming back
            last = {"error": str(exc)[:500]}
        else:
            last = {
                name: (o.get("status", {}).get("conditions"), o["metadata"]["generation"])
                for name, o in items.items()
                if not converged(o)
            }
            same = sorted(items) == sorted(expected) and all(
                vectors_of(items[n]["spec"]) == vectors_of(expected[n]) for n in expected
            )
            if same and not last:
                return time.monotonic() - start
        if time.monotonic() > deadline:
            tail = operator.tail() if operator is not None else ""
            raise AssertionError(
                f"not converged after {timeout:.0f} s: {json.dumps(last, indent=1)[:3000]}\n"
                f"operator log tail:\n{tail}"
            )
        time.sleep(0.5)


def observe_collections(store: Path, names: list[str]) -> dict[str, ObservedCollection | None]:
    """The live collections (only while no operator holds the store)."""
    gateway = connect(path=str(store))
    try:
        return {name: gateway.observe(name) for name in names}
    finally:
        forget(path=str(store))


def assert_qdrant_matches(store: Path, kns: str, expected: Mapping[str, Mapping[str, Any]]) -> None:
    """Each collection holds exactly the vectors (names and sizes) its spec asks for."""
    live = observe_collections(store, [f"{kns}_{name}" for name in expected])
    for name, spec in expected.items():
        collection = live[f"{kns}_{name}"]
        assert collection is not None, f"{kns}_{name} is missing"
        want = vectors_of(spec)
        have = {v.name: v.size for v in collection.vectors}
        assert have == want, f"{kns}_{name}: {have} != {want}"
