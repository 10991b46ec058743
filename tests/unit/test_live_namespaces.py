"""k8s.kube.LiveNamespaces: a pass starts from kopf's live copy, re-reads with a GET."""

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


def test_a_body_without_metadata_is_read_from_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "get_namespace", lambda ns, n: {"metadata": {"resourceVersion": "1"}})
    assert kube.LiveNamespaces({}).get("ns", "a") == {"metadata": {"resourceVersion": "1"}}
