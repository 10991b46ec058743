"""k8s.kube: a pass starts from kopf's live copy and re-reads with a GET; one ApiClient."""

from __future__ import annotations

from typing import Any

import pytest

from vectorschema.k8s import kube


def test_first_read_is_a_copy_of_the_live_body_then_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    gets: list[tuple[str, str]] = []

    def get_namespace(namespace: str, name: str) -> dict[str, Any]:
        gets.append((namespace, name))
        return {"metadata": {"resourceVersion": "9"}}

    monkeypatch.setattr(kube, "get_namespace", get_namespace)
    live = {"metadata": {"name": "a", "resourceVersion": "7"}, "status": {"x": [1]}}
    store = kube.LiveNamespaces(live)
    first = store.get("ns", "a")
    assert first == live and first is not live
    first["status"]["x"].append(2)  # a pass may change its copy: the live body is untouched
    assert live["status"] == {"x": [1]}
    assert gets == []
    assert store.get("ns", "a") == {"metadata": {"resourceVersion": "9"}}  # after a conflict
    assert gets == [("ns", "a")]


def test_a_reread_takes_the_live_copy_when_kopf_has_a_newer_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first pass of a new object writes its status while kopf adds its finalizer: a
    409, and by then kopf's copy has the finalizer. That copy is the re-read (no GET); a
    version already handed out (or replaced by our own write) is read with a GET."""
    gets: list[str] = []

    def get_namespace(namespace: str, name: str) -> dict[str, Any]:
        gets.append(name)
        return {"metadata": {"resourceVersion": "11"}}

    monkeypatch.setattr(kube, "get_namespace", get_namespace)
    live: dict[str, Any] = {"metadata": {"resourceVersion": "7"}}
    body = kube.LiveNamespaces(live)  # kopf replaces what this mapping shows
    assert body.get("ns", "a")["metadata"]["resourceVersion"] == "7"
    live["metadata"] = {"resourceVersion": "8", "finalizers": ["vectorschema.dev/release"]}
    again = body.get("ns", "a")
    assert again["metadata"]["finalizers"] == ["vectorschema.dev/release"] and gets == []
    assert body.get("ns", "a") == {"metadata": {"resourceVersion": "11"}}  # 8 handed out
    assert gets == ["a"]
    live["metadata"] = {"resourceVersion": "12"}  # newer still: two live reads are enough
    assert body.get("ns", "a") == {"metadata": {"resourceVersion": "11"}}
    assert gets == ["a", "a"]


def test_a_live_copy_older_than_our_last_write_is_read_fresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass woken right after the last one wrote (a Job event) may get kopf's copy from
    before that write: it must not plan from it (it would report the last change undone)."""
    monkeypatch.setattr(
        kube, "patch_namespace_status", lambda ns, n, patch, rv: str(int(rv or 0) + 1)
    )
    monkeypatch.setattr(kube, "get_namespace", lambda ns, n: {"metadata": {"resourceVersion": "8"}})
    replaced: list[str] = []
    first = kube.LiveNamespaces({"metadata": {"resourceVersion": "7"}}, replaced)
    assert first.get("ns", "a") == {"metadata": {"resourceVersion": "7"}}
    assert first.patch_status("ns", "a", {"x": 1}, "7") == "8"
    assert replaced == ["7"]
    # the next pass, same loop, kopf's copy still at 7: a GET instead
    stale = kube.LiveNamespaces({"metadata": {"resourceVersion": "7"}}, replaced)
    assert stale.get("ns", "a") == {"metadata": {"resourceVersion": "8"}}
    caught_up = kube.LiveNamespaces({"metadata": {"resourceVersion": "8"}, "spec": {}}, replaced)
    assert caught_up.get("ns", "a") == {"metadata": {"resourceVersion": "8"}, "spec": {}}
    for v in range(20):
        first._remember(str(v))
    assert len(replaced) == kube.LiveNamespaces.KEPT


def test_a_body_without_metadata_is_read_from_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "get_namespace", lambda ns, n: {"metadata": {"resourceVersion": "1"}})
    assert kube.LiveNamespaces({}).get("ns", "a") == {"metadata": {"resourceVersion": "1"}}


def test_one_api_client_per_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every call shares one ApiClient (kept-alive connections); loading the configuration
    again starts a new one (a new cluster, new credentials)."""
    import kubernetes

    def no_cluster() -> None:
        raise kubernetes.config.ConfigException("not in a pod")

    monkeypatch.setattr(kubernetes.config, "load_incluster_config", no_cluster)
    monkeypatch.setattr(kubernetes.config, "load_kube_config", lambda config_file=None: None)
    kube.load_config()
    first = kube.api_client()
    assert kube.api_client() is first
    assert kube._custom().api_client is first
    kube.load_config()
    assert kube.api_client() is not first


def test_the_shared_client_keeps_a_connection_per_calling_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool keeps as many connections as threads may call at once: urllib3 closes a
    connection that comes back to a full pool, and the next call beyond the pool's size
    pays a new TLS handshake. It never shrinks below the client's own default."""
    import kubernetes

    def no_cluster() -> None:
        raise kubernetes.config.ConfigException("not in a pod")

    monkeypatch.setattr(kubernetes.config, "load_incluster_config", no_cluster)
    monkeypatch.setattr(kubernetes.config, "load_kube_config", lambda config_file=None: None)
    default = kubernetes.client.Configuration.get_default_copy().connection_pool_maxsize
    kube.load_config(threads=default + 60)
    pool = kube.api_client().rest_client.pool_manager
    assert pool.connection_pool_kw["maxsize"] == default + 60
    kube.load_config(threads=1)
    assert kube.api_client().rest_client.pool_manager.connection_pool_kw["maxsize"] == default
    kube.load_config()
    assert kube.api_client().rest_client.pool_manager.connection_pool_kw["maxsize"] == default
