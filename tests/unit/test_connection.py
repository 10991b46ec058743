"""The one connection policy (`k8s.connection`), the failure table (`controller.errors`)
and the bounded release on deletion (`k8s.release`): pure decisions, no cluster."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from conftest import dense, namespace, vdef

from vectorschema.api import EventReason, Reason
from vectorschema.controller.errors import (
    FAILURES,
    RETRY_DELAY,
    ConnectorError,
    Phase,
    classify,
)
from vectorschema.controller.finalize import Finalized
from vectorschema.controller.results import Event
from vectorschema.core.planning import PluginConflict, PluginNotFound
from vectorschema.k8s import kube
from vectorschema.k8s.connection import (
    ConnectionUnavailable,
    cli_target,
    namespace_target,
    operator_target,
)
from vectorschema.k8s.release import release
from vectorschema.qdrant.client import Target
from vectorschema.qdrant.errors import (
    CollectionNotFound,
    GatewayError,
    QdrantRejected,
    QdrantUnavailable,
)

URL = "http://qdrant.example:6333"
SPEC: dict[str, Any] = {"plugins": []}


def secrets(**values: str) -> Any:
    def read(namespace: str, name: str, key: str) -> str:
        try:
            return values[f"{namespace}/{name}/{key}"]
        except KeyError:
            raise kube.SecretMissing(f"Secret {namespace}/{name} not found") from None

    return read


# --- the policy ------------------------------------------------------------------------


def test_operator_default_is_the_url_else_the_local_store() -> None:
    assert operator_target({}) == Target()
    assert operator_target({"QDRANT_PATH": "/data"}) == Target(path="/data")
    env = {"QDRANT_URL": URL, "QDRANT_API_KEY": "k", "QDRANT_PATH": "/data"}
    assert operator_target(env) == Target(url=URL, api_key="k")


def test_operator_ignores_a_key_without_url(caplog: pytest.LogCaptureFixture) -> None:
    assert operator_target({"QDRANT_API_KEY": "k"}) == Target()
    assert "QDRANT_API_KEY is set without QDRANT_URL" in caplog.text


def test_namespace_without_connection_uses_the_operator_default() -> None:
    resource = namespace(SPEC)
    assert namespace_target(resource, secrets(), {"QDRANT_URL": URL}) == Target(url=URL)


def test_namespace_url_and_secret() -> None:
    resource = namespace(
        SPEC | {"qdrant": {"url": "https://q:6333", "apiKeySecretRef": {"name": "s", "key": "k"}}},
        kube_namespace="team-a",
    )
    read = secrets(**{"team-a/s/k": "s3cr3t"})
    assert namespace_target(resource, read, {}) == Target(url="https://q:6333", api_key="s3cr3t")


def test_namespace_secret_with_the_operator_url() -> None:
    resource = namespace(
        SPEC | {"qdrant": {"apiKeySecretRef": {"name": "s", "key": "k"}}}, kube_namespace="team-a"
    )
    read = secrets(**{"team-a/s/k": "s3cr3t"})
    target = namespace_target(resource, read, {"QDRANT_URL": URL})
    assert target == Target(url=URL, api_key="s3cr3t")
    with pytest.raises(ConnectionUnavailable, match=r"neither spec\.qdrant\.url nor QDRANT_URL"):
        namespace_target(resource, read, {})


def test_missing_secret_is_a_connection_failure() -> None:
    resource = namespace(
        SPEC | {"qdrant": {"url": URL, "apiKeySecretRef": {"name": "s", "key": "k"}}},
        kube_namespace="team-a",
    )
    with pytest.raises(ConnectionUnavailable, match="Secret team-a/s not found"):
        namespace_target(resource, secrets(), {})


@pytest.mark.parametrize(
    ("url", "path", "env", "expected"),
    [
        (None, None, {}, None),
        (None, None, {"QDRANT_URL": URL, "QDRANT_API_KEY": "k"}, Target(url=URL, api_key="k")),
        (URL, None, {"QDRANT_API_KEY": "k"}, Target(url=URL, api_key="k")),
        (None, "/store", {"QDRANT_URL": URL}, Target(path="/store")),
    ],
)
def test_cli_target(
    url: str | None, path: str | None, env: dict[str, str], expected: Target | None
) -> None:
    assert cli_target(url, path, env) == expected


def test_target_checks_its_arguments_once() -> None:
    with pytest.raises(ValueError, match="not both"):
        Target(url=URL, path="/p")
    with pytest.raises(ValueError, match="only applies to a Qdrant url"):
        Target(api_key="k")


# --- the failure table ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "phase", "reason", "stalled", "retry"),
    [
        (PluginNotFound(["x"]), Phase.OBSERVE, Reason.PLUGIN_NOT_FOUND, True, None),
        (ConnectionUnavailable("no Secret"), Phase.OBSERVE, Reason.SECRET_NOT_FOUND, False, 10.0),
        (QdrantUnavailable("down"), Phase.OBSERVE, Reason.QDRANT_UNAVAILABLE, False, 10.0),
        (QdrantUnavailable("down"), Phase.APPLY, Reason.QDRANT_UNAVAILABLE, False, 10.0),
        (QdrantRejected("no"), Phase.OBSERVE, Reason.QDRANT_REJECTED, True, 60.0),
        (CollectionNotFound("gone"), Phase.OBSERVE, Reason.QDRANT_REJECTED, True, 60.0),
        (CollectionNotFound("gone"), Phase.APPLY, Reason.PROGRESSING, False, 1.0),
        (QdrantRejected("no"), Phase.APPLY, Reason.APPLY_FAILED, True, 60.0),
        (GatewayError("odd"), Phase.APPLY, Reason.APPLY_FAILED, True, 60.0),
    ],
)
def test_each_failure_has_one_reason(
    error: Exception, phase: Phase, reason: Reason, stalled: bool, retry: float | None
) -> None:
    failure = classify(error, phase)
    assert failure is not None
    assert (failure.reason, failure.stalled, failure.retry_after) == (reason, stalled, retry)
    assert failure.warn is (reason is Reason.APPLY_FAILED)


def test_plugin_errors_clear_the_plan_and_unexpected_errors_are_not_mapped() -> None:
    v = vdef(dense("v"))
    conflict = classify(PluginConflict("v", "a", v, "b", v), Phase.OBSERVE)
    assert conflict is not None and conflict.clear_plan
    assert classify(RuntimeError("bug"), Phase.APPLY) is None
    assert classify(kube.Conflict("409"), Phase.APPLY) is None  # the caller re-runs the pass
    assert RETRY_DELAY == 10.0
    assert all(issubclass(row.error, Exception) for row in FAILURES)
    assert issubclass(ConnectionUnavailable, ConnectorError)


# --- release on deletion ---------------------------------------------------------------------


def body(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "tenant", "namespace": "team-a", "uid": "u"}, "spec": spec}


def fails(error: Exception) -> Any:
    def release_collection(resource: Any, connect: Any) -> Finalized:
        raise error

    return release_collection


def test_release_posts_what_finalize_did() -> None:
    done = Finalized(Event("Normal", EventReason.DELETED, "deleted"))
    event = release(
        body(),
        0,
        retries=5,
        delay=1.0,
        connector_for=lambda r: lambda: None,  # type: ignore[arg-type, return-value]
        release_collection=lambda resource, connect: done,
    )
    assert event == done.event


@pytest.mark.parametrize("error", [QdrantUnavailable("down"), ConnectionUnavailable("no Secret")])
def test_release_retries_then_lets_go_with_a_warning(error: Exception) -> None:
    kwargs: Any = {"retries": 3, "delay": 2.0, "connector_for": lambda r: None}
    with pytest.raises(kopf.TemporaryError) as info:
        release(body(), 1, release_collection=fails(error), **kwargs)
    assert info.value.delay == 2.0
    event = release(body(), 2, release_collection=fails(error), **kwargs)
    assert (event.type, event.reason) == ("Warning", EventReason.RELEASED_UNCLEAN)
    assert "released after 3 attempts" in event.message and str(error) in event.message


def test_release_of_an_invalid_spec_leaves_the_collection() -> None:
    event = release(
        body(plugins="nope"),
        0,
        retries=3,
        delay=1.0,
        connector_for=lambda r: None,  # type: ignore[arg-type, return-value]
        release_collection=fails(AssertionError("not called")),
    )
    assert event.reason == EventReason.RELEASED_UNCLEAN
    assert event.message.startswith("invalid spec, collection left as it is: ")
