"""The one connection policy (`k8s.connection`), the failure table (`controller.errors`)
and the bounded release on deletion (`k8s.release`): pure decisions, no cluster."""

from __future__ import annotations

from typing import Any

import kopf
import pytest
from conftest import dense, namespace, vdef

from vectorschema.api import EventReason, Reason
from vectorschema.controller.backoff import RetryKind
from vectorschema.controller.errors import (
    FAILURES,
    ConnectionRefused,
    ConnectorError,
    Phase,
    classify,
)
from vectorschema.controller.finalize import Finalized
from vectorschema.controller.results import Event
from vectorschema.core.planning import PluginConflict, PluginNotFound
from vectorschema.core.policy import SCRUBBER, Policy
from vectorschema.core.schema import CollectionSettings
from vectorschema.k8s import kube
from vectorschema.k8s.connection import (
    ConnectionUnavailable,
    LabelledSecrets,
    cli_target,
    connection_id,
    namespace_target,
    open_target,
    operator_target,
)
from vectorschema.k8s.release import release
from vectorschema.qdrant.client import Target
from vectorschema.qdrant.errors import (
    CollectionIsAlias,
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
            raise ConnectionUnavailable(f"Secret {namespace}/{name} not found") from None

    return read


def never_read(namespace: str, name: str, key: str) -> str:
    raise AssertionError(f"Secret {namespace}/{name} was read")


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
    allowed = {"VECTORSCHEMA_ALLOWED_QDRANT_URLS": "https://Q:6333"}
    assert namespace_target(resource, read, allowed) == Target(
        url="https://q:6333", api_key="s3cr3t"
    )


def test_namespace_secret_with_the_operator_url() -> None:
    resource = namespace(
        SPEC | {"qdrant": {"apiKeySecretRef": {"name": "s", "key": "k"}}}, kube_namespace="team-a"
    )
    read = secrets(**{"team-a/s/k": "s3cr3t"})
    target = namespace_target(resource, read, {"QDRANT_URL": URL})
    assert target == Target(url=URL, api_key="s3cr3t")
    with pytest.raises(ConnectionRefused, match=r"neither spec\.qdrant\.url nor QDRANT_URL"):
        namespace_target(resource, read, {})


def test_missing_secret_is_a_connection_failure() -> None:
    resource = namespace(
        SPEC | {"qdrant": {"url": URL, "apiKeySecretRef": {"name": "s", "key": "k"}}},
        kube_namespace="team-a",
    )
    with pytest.raises(ConnectionUnavailable, match="Secret team-a/s not found"):
        namespace_target(resource, secrets(), {"VECTORSCHEMA_ALLOWED_QDRANT_URLS": URL})


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

UNAV, REJ = RetryKind.UNAVAILABLE, RetryKind.REJECTED


@pytest.mark.parametrize(
    ("error", "phase", "reason", "stalled", "retry"),
    [
        (PluginNotFound(["x"]), Phase.OBSERVE, Reason.PLUGIN_NOT_FOUND, True, None),
        (ConnectionUnavailable("no Secret"), Phase.OBSERVE, Reason.SECRET_NOT_FOUND, False, UNAV),
        (QdrantUnavailable("down"), Phase.OBSERVE, Reason.QDRANT_UNAVAILABLE, False, UNAV),
        (QdrantUnavailable("down"), Phase.APPLY, Reason.QDRANT_UNAVAILABLE, False, UNAV),
        (QdrantRejected("no"), Phase.OBSERVE, Reason.QDRANT_REJECTED, True, REJ),
        (CollectionNotFound("gone"), Phase.OBSERVE, Reason.QDRANT_REJECTED, True, REJ),
        (CollectionNotFound("gone"), Phase.APPLY, Reason.PROGRESSING, False, RetryKind.MOVED),
        (QdrantRejected("no"), Phase.APPLY, Reason.APPLY_FAILED, True, REJ),
        (GatewayError("odd"), Phase.APPLY, Reason.APPLY_FAILED, True, REJ),
    ],
)
def test_each_failure_has_one_reason(
    error: Exception, phase: Phase, reason: Reason, stalled: bool, retry: RetryKind | None
) -> None:
    failure = classify(error, phase)
    assert failure is not None
    assert (failure.reason, failure.stalled, failure.retry) == (reason, stalled, retry)
    assert failure.warn is (reason is Reason.APPLY_FAILED)


def test_plugin_errors_clear_the_plan_and_unexpected_errors_are_not_mapped() -> None:
    v = vdef(dense("v"))
    conflict = classify(PluginConflict("v", "a", v, "b", v), Phase.OBSERVE)
    assert conflict is not None and conflict.clear_plan
    assert classify(RuntimeError("bug"), Phase.APPLY) is None
    assert classify(kube.Conflict("409"), Phase.APPLY) is None  # the caller re-runs the pass
    assert all(issubclass(row.error, Exception) for row in FAILURES)
    assert issubclass(ConnectionUnavailable, ConnectorError)


def test_an_alias_is_stalled_in_any_phase() -> None:
    """Issue 17, item 7: a collection name that is an alias on the server."""
    for phase in Phase:
        failure = classify(CollectionIsAlias("an alias"), phase)
        assert failure is not None and failure.reason == Reason.COLLECTION_IS_ALIAS
        assert failure.stalled and failure.clear_plan


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


@pytest.mark.parametrize(
    "error", [QdrantUnavailable("down"), ConnectionUnavailable("no Secret"), RuntimeError("bug")]
)
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


def test_release_of_a_name_that_makes_no_default_collection_name_ends() -> None:
    """Issue 17: a 253-character name with a custom collectionName. Deriving the default
    name raised ValueError outside the release's error handling: retried for ever."""
    long = body(collectionName="team-a_long")
    long["metadata"]["name"] = "n" * 253
    done = Finalized(Event("Normal", EventReason.DELETED, "deleted"))
    event = release(
        long,
        0,
        retries=3,
        delay=1.0,
        connector_for=lambda r: lambda: None,  # type: ignore[arg-type, return-value]
        release_collection=lambda resource, connect: done,
    )
    assert event == done.event


class BrokenPolicy(Policy):
    """A policy that fails where nothing was expected to (anything in release may)."""

    def collection_refusal(self, *_: Any) -> str | None:
        raise RuntimeError("unexpected")


def test_every_failure_of_release_is_bounded() -> None:
    kwargs: Any = {
        "retries": 3,
        "delay": 2.0,
        "connector_for": lambda r: None,
        "release_collection": fails(AssertionError("not called")),
        "policy": BrokenPolicy(),
    }
    with pytest.raises(kopf.TemporaryError):
        release(body(), 1, **kwargs)
    event = release(body(), 2, **kwargs)
    assert (event.type, event.reason) == ("Warning", EventReason.RELEASED_UNCLEAN)
    assert "released after 3 attempts" in event.message and "unexpected" in event.message


# --- the admin's policy at the connection (issue 8) ---------------------------------------

ALLOW = {"VECTORSCHEMA_ALLOWED_QDRANT_URLS": URL}


def with_url(url: str, **ref: str) -> Any:
    qdrant: dict[str, Any] = {"url": url}
    if ref:
        qdrant["apiKeySecretRef"] = ref
    return namespace(SPEC | {"qdrant": qdrant}, kube_namespace="team-a")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://elsewhere.example:6333", Reason.QDRANT_URL_NOT_ALLOWED),
        ("http://qdrant.example:6334", Reason.QDRANT_URL_NOT_ALLOWED),
        ("http://127.0.0.1:99999", Reason.INVALID_CONNECTION),
        ("http://bücher.example", Reason.INVALID_CONNECTION),
        ("http://user:pw@qdrant.example:6333", Reason.INVALID_CONNECTION),
    ],
)
def test_a_url_off_the_allowlist_is_refused_before_the_secret_is_read(
    url: str, reason: Reason
) -> None:
    with pytest.raises(ConnectionRefused) as refused:
        namespace_target(with_url(url, name="s", key="k"), never_read, ALLOW)
    assert refused.value.reason is reason
    assert "spec.qdrant.url" in str(refused.value)


def test_the_default_allowlist_is_the_operators_own_qdrant() -> None:
    ok = namespace_target(with_url("http://QDRANT.example"), never_read, {"QDRANT_URL": URL})
    assert ok == Target(url=URL)
    with pytest.raises(ConnectionRefused):  # embedded operator: no URL is allowed
        namespace_target(with_url(URL), never_read, {})


def labelled(data: dict[str, bytes], labels: dict[str, str] | None = None) -> dict[str, Any]:
    import base64

    return {
        "labels": {"vectorschema.dev/qdrant-credentials": "true"} if labels is None else labels,
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def test_only_labelled_secrets_are_read_and_only_valid_keys_are_used() -> None:
    store = LabelledSecrets(
        {
            ("team-a", "good"): labelled({"k": b"  abc-123\n"}),
            ("team-a", "newline"): labelled({"k": b"abc\nX-Evil: 1"}),
            ("team-a", "other-label"): labelled({"k": b"abc"}, {"app": "x"}),
        },
        Policy(),
        exists=lambda ns, name: name == "unlabelled",
    )
    assert store.read("team-a", "good", "k") == "abc-123"
    with pytest.raises(ConnectionUnavailable, match="has no key 'missing'"):
        store.read("team-a", "good", "missing")
    with pytest.raises(ConnectionUnavailable, match="Secret team-a/gone not found"):
        store.read("team-a", "gone", "k")
    for name in ("unlabelled", "other-label"):
        with pytest.raises(ConnectionRefused) as refused:
            store.read("team-a", name, "k")
        assert refused.value.reason is Reason.SECRET_NOT_ALLOWED
        assert "spec.qdrant.apiKeySecretRef" in str(refused.value)
    with pytest.raises(ConnectionRefused) as refused:
        store.read("team-a", "newline", "k")
    assert refused.value.reason is Reason.SECRET_INVALID
    assert "spec.qdrant.apiKeySecretRef.key" in str(refused.value)
    assert "abc" not in str(refused.value).replace("key 'k'", "")
    # both values are known to the scrubber now
    assert SCRUBBER.scrub("x abc-123 y") == "x <redacted> y"
    assert "X-Evil" not in SCRUBBER.scrub("abc\nX-Evil: 1")


def test_a_client_that_cannot_be_built_is_a_status(monkeypatch: pytest.MonkeyPatch) -> None:
    from vectorschema.k8s import connection

    def broken(target: Target) -> Any:
        raise UnicodeError("label too long")

    monkeypatch.setattr(connection, "connect_to", broken)
    with pytest.raises(ConnectionRefused) as refused:
        open_target(Target(url=URL))
    assert refused.value.reason is Reason.INVALID_CONNECTION


def test_an_operation_records_its_connection() -> None:
    assert connection_id(namespace(SPEC), {}) == "embedded"
    assert connection_id(namespace(SPEC), {"QDRANT_URL": URL}) == URL
    assert connection_id(with_url("http://Qdrant.example:6333/"), {}) == URL


def test_refusals_are_stalled_without_retry_and_release_lets_go_at_once() -> None:
    refused = ConnectionRefused(Reason.SECRET_NOT_ALLOWED, "spec.qdrant.apiKeySecretRef: no")
    failure = classify(refused, Phase.OBSERVE)
    assert failure is not None and failure.stalled and failure.reason is Reason.SECRET_NOT_ALLOWED
    kwargs: Any = {"retries": 5, "delay": 2.0, "connector_for": lambda r: None}
    event = release(body(), 0, release_collection=fails(refused), **kwargs)
    assert (event.type, event.reason) == ("Warning", EventReason.RELEASED_UNCLEAN)
    assert "spec.qdrant.apiKeySecretRef: no" in event.message


def test_release_scrubs_what_it_shows() -> None:
    SCRUBBER.remember("sekrit-in-an-error")
    kwargs: Any = {"retries": 1, "delay": 2.0, "connector_for": lambda r: None}
    error = QdrantUnavailable("bad header b'sekrit-in-an-error'")
    event = release(body(), 0, release_collection=fails(error), **kwargs)
    assert "sekrit-in-an-error" not in event.message and "<redacted>" in event.message


def test_release_never_looks_at_a_collection_outside_the_tenant_prefix(
    qdrant: Any,
) -> None:
    """A tenant names another tenant's collection (refused by every pass) and deletes its
    resource: the release must not connect or observe it, else its Event is an oracle
    ("is gone" vs "is not owned by") for another namespace's collections."""
    qdrant.create_collection(
        "team-b_catalog",
        [vdef(dense("text"))],
        CollectionSettings(),
        {"vectorschema.dev/owner": "team-b/catalog"},
    )
    answers = []
    connected: list[str] = []

    def connector_for(resource: Any) -> Any:
        def connect() -> Any:
            connected.append(resource.collection_name)
            return qdrant

        return connect

    for target in ("team-b_catalog", "team-b_nothing"):
        event = release(
            body(collectionName=target, deletionPolicy="Delete"),
            0,
            retries=3,
            delay=1.0,
            connector_for=connector_for,
            policy=Policy(),
        )
        assert connected == []
        assert (event.type, event.reason) == ("Warning", EventReason.RELEASED_UNCLEAN)
        assert "spec.collectionName" in event.message
        answers.append(event.message.replace(target, "<name>"))
    assert answers[0] == answers[1]  # the same answer whether it exists or not
    assert qdrant.observe("team-b_catalog") is not None
