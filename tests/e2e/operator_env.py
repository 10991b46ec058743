"""Fixtures and helpers for tests that run the operator against the real control plane.

The operator runs in this test process (`kopf.testing.KopfRunner`), with the embedded
Qdrant (local mode) on a temp path. Because a local-mode store is locked by one process,
the tests reach Qdrant through the same gateway instance the operator uses
(`qdrant.pool.connect(path=...)` shares one per path), exactly as a second client of a
real server would. `wakeups()` is the running operator's wake-up state, from its memo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import kopf
import pytest
import yaml

from vectorschema.k8s.wakeups import Wakeups
from vectorschema.qdrant.client import ClientGateway
from vectorschema.qdrant.pool import connect

REPO = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"
RESYNC_SECONDS = "2"

KubectlFn = Callable[..., subprocess.CompletedProcess[str]]


class Kubectl(Protocol):
    """The `kubectl` fixture's signature (also used by modules with their own cluster)."""

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]: ...


def run_kubectl(
    kubeconfig: Path, *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the virtualenv's kubectl with ``kubeconfig``; see the ``kubectl`` fixture."""
    cmd = [str(KUBECTL), f"--kubeconfig={kubeconfig}", *args]
    result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} exited with {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def crds(kubectl: KubectlFn) -> None:
    """The project's CRDs, applied with kubectl and Established."""
    kubectl("apply", "-f", str(REPO / "crds"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "crd/namespaces.vectorschema.dev",
        "crd/plugins.vectorschema.dev",
        "--timeout=60s",
    )


@pytest.fixture(scope="session")
def qdrant_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("qdrant") / "store"


@pytest.fixture(scope="session")
def qdrant(qdrant_path: Path) -> ClientGateway:
    """The embedded Qdrant the operator uses (same process, same gateway instance)."""
    return connect(path=str(qdrant_path))


@pytest.fixture(scope="session")
def operator(
    control_plane: Any, crds: None, qdrant: ClientGateway, qdrant_path: Path
) -> Iterator[Any]:
    """The operator, as `kopf run -m vectorschema.k8s.handlers --all-namespaces --standalone`."""
    from kopf.testing import KopfRunner

    env = {
        "QDRANT_PATH": str(qdrant_path),
        "VECTORSCHEMA_RESYNC_SECONDS": RESYNC_SECONDS,
        "VECTORSCHEMA_DELETE_RETRIES": "2",
        "VECTORSCHEMA_DELETE_RETRY_DELAY": "1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    # kubernetes freezes KUBECONFIG at import time (for kopf's login, too); a test process
    # may import it before the control plane exists, so point it at the cluster now.
    import kubernetes.config.kube_config as kube_config

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = os.environ["KUBECONFIG"]
    try:
        with KopfRunner(
            ["run", "-m", "vectorschema.k8s.handlers", "--all-namespaces", "--standalone"],
            reraise=True,
        ) as runner:
            yield runner
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert runner.exception is None, runner.exception


#: The memo of the operator running in this process (one per `kopf run`).
_memos: list[kopf.Memo] = []


@kopf.on.startup()
def _remember_memo(memo: kopf.Memo, **_: Any) -> None:
    _memos.append(memo)


def wakeups() -> Wakeups:
    """The wake-up state of the operator running in this process (kept in its memo)."""
    state: Wakeups = _memos[-1].wakeups
    return state


def apply(kubectl: KubectlFn, *docs: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def get(kubectl: KubectlFn, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    args = ["get", kind, name, "-o", "json"]
    if namespace:
        args += ["-n", namespace]
    result: dict[str, Any] = json.loads(kubectl(*args).stdout)
    return result


def vns(kubectl: KubectlFn, namespace: str, name: str) -> dict[str, Any]:
    return get(kubectl, "namespaces.vectorschema.dev", name, namespace)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return dict(c)
    return {}


def reason_is(
    kubectl: KubectlFn, namespace: str, name: str, type_: str, status: str, reason: str
) -> Callable[[], dict[str, Any] | None]:
    """A wait_for predicate: the object once condition `type_` has status and reason."""

    def check() -> dict[str, Any] | None:
        obj = vns(kubectl, namespace, name)
        c = condition(obj, type_)
        gen = obj["metadata"]["generation"]
        if (
            c.get("status") == status
            and c.get("reason") == reason
            and obj["status"].get("observedGeneration") == gen
        ):
            return obj
        return None

    return check


def until(
    kubectl: KubectlFn,
    namespace: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    timeout: float = 60.0,
    message: str = "condition",
) -> dict[str, Any]:
    """Poll the Namespace until `predicate(obj)`; on timeout show its last status."""
    deadline = time.monotonic() + timeout
    while True:
        obj = vns(kubectl, namespace, name)
        if predicate(obj):
            return obj
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {message}; last status:\n"
                + json.dumps(obj.get("status"), indent=2)
            )
        time.sleep(0.2)


def namespace_doc(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "kind": "Namespace",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def plugin_doc(name: str, *vectors: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "kind": "Plugin",
        "metadata": {"name": name},
        "spec": {"vectors": list(vectors)},
    }


def events(kubectl: KubectlFn, namespace: str, name: str) -> list[dict[str, Any]]:
    out = kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items
