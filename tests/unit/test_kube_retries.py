"""Timeouts and retries of the operator's own Kubernetes calls, against a loopback server
that never answers (no mock of the kubernetes client: its real HTTP stack times out)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from vectorschema.k8s import retries
from vectorschema.k8s.retries import KubeUnavailable, retried


def test_transient_failures_are_retried_then_reported() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ApiException(status=503, reason="Service Unavailable")
        return "ok"

    assert retried(flaky, wait_max=0.01)() == "ok"
    assert len(calls) == 3

    def down() -> str:
        calls.append(1)
        raise urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out")  # type: ignore[arg-type]

    calls.clear()
    with pytest.raises(KubeUnavailable, match=r"failed 3 times \(down\): timed out") as info:
        retried(down, wait_max=0.01)()
    assert len(calls) == retries.ATTEMPTS
    assert info.value.__context__ is None or not isinstance(info.value.__context__, ApiException)


@pytest.mark.parametrize("status", [403, 404, 409, 422])
def test_answers_are_not_retried(status: int) -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise ApiException(status=status)

    with pytest.raises(ApiException):
        retried(refused, wait_max=0.01)()
    assert calls == [1]


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            held.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    t.join()
    for conn in held:
        conn.close()
    sock.close()


def test_a_server_that_never_answers_times_out(
    silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real kubernetes client, a real socket: the call ends after its timeout."""
    import kubernetes

    monkeypatch.setenv("VECTORSCHEMA_KUBE_TIMEOUT", "0.5")
    config = kubernetes.client.Configuration()
    config.host = silent_server
    config.verify_ssl = False
    config.retries = 0
    api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(config))

    def get() -> object:
        return api.get_namespaced_custom_object(
            "vectorschema.dev",
            "v1alpha1",
            "ns",
            "namespaces",
            "x",
            **retries.with_timeout({}),
        )

    started = time.monotonic()
    with pytest.raises(KubeUnavailable, match="timed out"):
        retried(get, wait_max=0.01)()
    assert time.monotonic() - started < 5  # 3 tries of 0.5 s, not forever
