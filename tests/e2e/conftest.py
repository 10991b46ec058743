"""Fixtures for end-to-end tests against a real local control plane.

Fixtures (all reusable by any module in ``tests/e2e``):

``control_plane`` (session)
    A started :class:`devenv.ControlPlane` (etcd + kube-apiserver +
    kube-controller-manager). While it runs, ``KUBECONFIG`` points at its admin kubeconfig
    and the virtualenv's ``kubectl`` is first on ``PATH``. Stopped at session end.
``kubectl`` (session)
    ``kubectl(*args, input=None, check=True, kubeconfig=None) -> CompletedProcess[str]``,
    the virtualenv's kubectl with the admin kubeconfig (or ``kubeconfig``). With
    ``check=True`` a non-zero exit fails the test with kubectl's output.
``k8s_api`` (session)
    A ``kubernetes.client.ApiClient`` with admin credentials.
``node_cluster`` (session)
    A started :class:`devenv.ControlPlane` with ``node=True``: its own plane plus a Ready
    node (:attr:`devenv.ControlPlane.node`, a :class:`devenv.Node`: containerd, kubelet,
    kube-proxy, kube-scheduler), Pods with pod networking and Services. Use its
    ``kubeconfig`` explicitly (``run_kubectl(node_cluster.kubeconfig, ...)``): it does not
    touch ``KUBECONFIG``. Images: ``node_cluster.node.import_image(archive)``, Pods with
    ``imagePullPolicy: Never``. If this host cannot run a node, the fixture fails with the
    reason (never skips). Only one node runs per machine: it waits for another to stop.
``namespace`` (function)
    A fresh namespace name (created; deleted without waiting afterwards).
``wait_for`` (session)
    :func:`wait_for`, for tests that do not want to import from conftest.

The binaries are built (or taken from the cache) once after collection, outside the
per-test timeout, and only if a selected test uses ``control_plane``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.e2e.operator_env import KUBECTL, Kubectl, run_kubectl

from devenv import ControlPlane, ControlPlaneError, build_binaries, cannot_run_node
from devenv.node import NODE_BUILD_SCRIPT
from devenv.nodehost import leftovers_after_stop

START_TIMEOUT = float(os.environ.get("VECTORSCHEMA_E2E_START_TIMEOUT", "90"))

T = TypeVar("T")

_bin_dir_key = pytest.StashKey[Path]()
_build_error_key = pytest.StashKey[str]()
_node_build_error_key = pytest.StashKey[str]()
NODE_START_TIMEOUT = float(os.environ.get("VECTORSCHEMA_E2E_NODE_START_TIMEOUT", "240"))


def wait_for(
    predicate: Callable[[], T | None],
    timeout: float = 30.0,
    message: str = "condition",
    interval: float = 0.2,
) -> T:
    """Call ``predicate`` until it returns something truthy; return that value.

    Exceptions raised by ``predicate`` count as "not yet"; the last one is reported if
    ``timeout`` seconds pass, as an AssertionError naming ``message``.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
        except Exception as exc:
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {message}: {last!r}")
        time.sleep(interval)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Close the shared Qdrant gateways while the interpreter still runs: a local-mode
    client closed by its finaliser at exit prints an ImportError traceback."""
    from vectorschema.qdrant.pool import close_all

    close_all()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``node_lifecycle`` first: they start nodes of their own, and only one
    node runs per machine (the session's ``node_cluster`` holds it until the end)."""
    items.sort(key=lambda item: item.get_closest_marker("node_lifecycle") is None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Build (or find cached) binaries before any test runs, outside the test timeout."""
    if session.config.option.collectonly:
        return
    names = [set(getattr(i, "fixturenames", ())) for i in session.items]
    plane, node = (
        any(n & {"control_plane", "node_cluster"} for n in names),
        any("node_cluster" in n for n in names),
    )
    if not plane:
        return
    capture = session.config.pluginmanager.getplugin("capturemanager")
    ctx = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with ctx:
        try:
            session.config.stash[_bin_dir_key] = build_binaries()
        except ControlPlaneError as exc:
            session.config.stash[_build_error_key] = str(exc)
        if node and cannot_run_node() is None:
            try:
                build_binaries(NODE_BUILD_SCRIPT)
            except ControlPlaneError as exc:
                session.config.stash[_node_build_error_key] = str(exc)


@pytest.fixture(scope="session")
def control_plane(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A running local control plane; KUBECONFIG and PATH point at it while it runs."""
    stash = request.config.stash
    if _build_error_key in stash:
        pytest.fail(stash[_build_error_key], pytrace=False)
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"), stash.get(_bin_dir_key, None))
    saved = {k: os.environ.get(k) for k in ("KUBECONFIG", "PATH")}
    try:
        try:
            plane.start(timeout=START_TIMEOUT)
        except ControlPlaneError as exc:
            pytest.fail(str(exc), pytrace=False)
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        os.environ["PATH"] = os.pathsep.join([str(KUBECTL.parent), saved["PATH"] or ""])
        yield plane
    finally:
        plane.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def node_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ControlPlane]:
    """A plane of its own plus a Ready node (see the module docstring)."""
    stash = request.config.stash
    for key in (_build_error_key, _node_build_error_key):
        if key in stash:
            pytest.fail(stash[key], pytrace=False)
    reason = cannot_run_node()
    if reason is not None:
        pytest.fail(f"this host cannot run the local node: {reason}", pytrace=False)
    plane = ControlPlane(
        tmp_path_factory.mktemp("node-cluster"), stash.get(_bin_dir_key, None), node=True
    )
    try:
        try:
            plane.start(timeout=NODE_START_TIMEOUT)
        except ControlPlaneError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield plane
    finally:
        node = plane.node
        plane.stop()
    if node is not None:
        left = leftovers_after_stop(node.bin_dir, node.node_dir)
        if left:
            pytest.fail(f"the node's stop left traces behind: {left}", pytrace=False)


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """``kubectl(*args, input=None, check=True)`` with the admin kubeconfig.

    ``kubeconfig=`` runs it as someone else (e.g. ``control_plane.user_kubeconfig(...)``).
    """

    def _kubectl(
        *args: str, input: str | None = None, check: bool = True, kubeconfig: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        config = kubeconfig or control_plane.kubeconfig
        return run_kubectl(config, *args, input=input, check=check)

    return _kubectl


@pytest.fixture(scope="session")
def k8s_api(control_plane: ControlPlane) -> Iterator[Any]:
    """A ``kubernetes.client.ApiClient`` with admin credentials."""
    from kubernetes import config

    kubeconfig = str(control_plane.kubeconfig)
    client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh, empty namespace; deleted (without waiting) after the test."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(name="wait_for", scope="session")
def wait_for_fixture() -> Callable[..., Any]:
    """:func:`wait_for` as a fixture."""
    return wait_for


# Operator fixtures (allowed_ports, crds, qdrant_path, qdrant, operator) live in
# operator_env.py.
from tests.e2e.operator_env import (  # noqa: E402, F401
    allowed_ports,
    crds,
    operator,
    qdrant,
    qdrant_path,
)
