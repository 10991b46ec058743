"""Fixtures and helpers for tests that run the operator against the real control plane.

The operator runs in this test process (`kopf.testing.KopfRunner`), with the embedded
Qdrant (local mode) on a temp path. Because a local-mode store is locked by one process,
the tests reach Qdrant through the same gateway instance the operator uses
(`qdrant.pool.connect(path=...)` shares one per path), exactly as a second client of a
real server would. `wakeups()` is the running operator's wake-up state, from its memo.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import kopf
import pytest
import yaml

from devenv import ControlPlane
from vectorschema.controller.locks import ResourceLocks
from vectorschema.k8s.wakeups import Wakeups
from vectorschema.qdrant.client import ClientGateway
from vectorschema.qdrant.pool import connect

REPO = Path(__file__).resolve().parents[2]
KUBECTL = Path(sys.executable).parent / "kubectl"
RESYNC_SECONDS = "2"
#: The label of Kubernetes namespaces the session operator does not serve.
OTHER_INSTALLATION = "vectorschema.dev/installation"
#: The label a Secret needs before a Namespace may reference it (the operator's default).
SECRET_LABEL = ("vectorschema.dev/qdrant-credentials", "true")
#: Loopback ports reserved at session start and put on the operator's URL allowlist
#: (VECTORSCHEMA_ALLOWED_QDRANT_URLS), for tests that run a listener the admin allows.
RESERVED_PORTS = 4
#: A closed port, also allowed: "Qdrant is unreachable" without any listener.
CLOSED_URL = "http://127.0.0.1:1"

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


@contextlib.contextmanager
def private_plane(session: ControlPlane, kubectl: Kubectl, path: Path) -> Iterator[ControlPlane]:
    """A control plane of a module's own (binaries from the session's build), with our CRDs
    Established: an operator process run on it is the only one that sees its objects."""
    own = ControlPlane(path, session.bin_dir)
    own.start()
    try:
        kubectl("apply", "-f", str(REPO / "crds"), kubeconfig=own.kubeconfig)
        kubectl(
            "wait",
            "--for=condition=Established",
            "crd/namespaces.vectorschema.dev",
            "--timeout=60s",
            kubeconfig=own.kubeconfig,
        )
        yield own
    finally:
        own.stop()


#: kubectl wait's error for an object without status conditions yet.
NO_CONDITIONS_YET = "status.conditions accessor error: <nil>"


def run_kubectl(
    kubeconfig: Path, *args: str, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the virtualenv's kubectl with ``kubeconfig``; see the ``kubectl`` fixture.

    ``kubectl wait --for=condition=...`` on an object whose ``status.conditions`` is still
    null (a CRD just applied) fails at once instead of waiting (".status.conditions
    accessor error: <nil> is of the type <nil>", seen once in CI): it is asked again until
    the conditions exist, within the same 120 s bound."""
    cmd = [str(KUBECTL), f"--kubeconfig={kubeconfig}", *args]
    deadline = time.monotonic() + 120
    while True:
        result = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        not_yet = args[:1] == ("wait",) and NO_CONDITIONS_YET in result.stderr
        if result.returncode == 0 or not not_yet or time.monotonic() > deadline:
            break
        time.sleep(0.2)
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


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def allowed_ports() -> list[int]:
    """Loopback ports on the operator's URL allowlist (reserved once per session)."""
    ports: set[int] = set()
    while len(ports) < RESERVED_PORTS:
        ports.add(free_loopback_port())
    return sorted(ports)


def allowed_urls(ports: list[int]) -> str:
    """VECTORSCHEMA_ALLOWED_QDRANT_URLS for the session operator."""
    return ",".join([CLOSED_URL, *(f"http://127.0.0.1:{p}" for p in ports)])


@pytest.fixture(scope="session")
def operator(
    control_plane: Any,
    crds: None,
    qdrant: ClientGateway,
    qdrant_path: Path,
    allowed_ports: list[int],
) -> Iterator[Any]:
    """The operator, as `kopf run -m vectorschema.k8s.handlers --all-namespaces --standalone`,
    with an admin policy that allows the reserved loopback ports (and the closed port 1)
    as Qdrant URLs; the Secret label and collection-name rules are the defaults."""
    from kopf.testing import KopfRunner

    env = {
        "VECTORSCHEMA_ALLOWED_QDRANT_URLS": allowed_urls(allowed_ports),
        "QDRANT_PATH": str(qdrant_path),
        "VECTORSCHEMA_RESYNC_SECONDS": RESYNC_SECONDS,
        # Scope by the Kubernetes namespace's labels: every namespace but those an admin
        # gave to another installation (test_tenancy.py, issue 17 item 6).
        "VECTORSCHEMA_NAMESPACE_SELECTOR": f"!{OTHER_INSTALLATION}",
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


def locks() -> ResourceLocks:
    """The per-resource locks of the operator running in this process (in its memo)."""
    state: ResourceLocks = _memos[-1].locks
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


def secret_doc(
    namespace: str, name: str, data: dict[str, bytes], *, labelled: bool = True
) -> dict[str, Any]:
    """A Secret; `labelled` gives it the label the operator requires (SECRET_LABEL)."""
    import base64

    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labelled:
        meta["labels"] = {SECRET_LABEL[0]: SECRET_LABEL[1]}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


# --- a loopback HTTP listener ----------------------------------------------------------


@dataclass
class Received:
    """One request a Listener received: method, path, headers (as sent) and body."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes = b""

    def text(self) -> str:
        head = self.raw_head.decode("latin-1")
        headers = "\n".join(f"{k}: {v}" for k, v in self.headers)
        return f"{self.method} {self.path}\n{head}\n{headers}\n" + self.body.decode("latin-1")


Responder = Callable[[Received], tuple[int, dict[str, Any]]]


def unavailable(_: Received) -> tuple[int, dict[str, Any]]:
    return 503, {"status": {"error": "Service Unavailable"}}


@dataclass
class Listener:
    """A tiny HTTP server on 127.0.0.1:`port` that records every request it receives.

    `respond(received) -> (status, json body)` decides the answer (default 503).
    `delay` holds each answer that many seconds (a slow server). Used as a stand-in for a
    hostile or broken "Qdrant" a tenant points its Namespace at. `host`: where it listens
    (the node's gateway address, for an operator in a Pod).
    """

    port: int
    respond: Responder = unavailable
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                got = Received(
                    self.command,
                    self.path,
                    list(self.headers.items()),
                    body,
                    raw_head=bytes(self.raw_requestline) + bytes(str(self.headers), "latin-1"),
                )
                listener.received.append(got)
                if listener.delay:
                    time.sleep(listener.delay)
                status, doc = listener.respond(got)
                payload = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def everything(self) -> str:
        """All that arrived, as text (to grep for a secret)."""
        return "\n".join(r.text() for r in self.received)
