"""Operator settings: the refusal of a per-Pod embedded store, and Qdrant's limits."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from vectorschema.k8s import settings


@pytest.fixture
def token(tmp_path: Path) -> Path:
    path = tmp_path / "serviceaccount" / "token"
    path.parent.mkdir()
    path.write_text("a-token")
    return path


def test_in_a_pod_without_a_qdrant_it_refuses_and_says_what_to_set(token: Path) -> None:
    refusal = settings.embedded_store_refusal({}, token)
    assert refusal is not None
    assert "QDRANT_URL" in refusal and "QDRANT_PATH" in refusal and "persistent" in refusal


@pytest.mark.parametrize(
    "env",
    [
        {"QDRANT_URL": "http://qdrant.qdrant.svc:6333"},
        {"QDRANT_PATH": "/data/qdrant"},  # the embedded store on a volume, on purpose
    ],
)
def test_in_a_pod_with_a_qdrant_it_starts(token: Path, env: dict[str, str]) -> None:
    assert settings.embedded_store_refusal(env, token) is None


def test_outside_a_pod_the_embedded_default_is_fine(tmp_path: Path) -> None:
    assert settings.embedded_store_refusal({}, tmp_path / "no-token") is None


def test_an_empty_variable_counts_as_unset(token: Path) -> None:
    assert settings.embedded_store_refusal({"QDRANT_URL": "", "QDRANT_PATH": ""}, token)


def test_qdrant_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VECTORSCHEMA_QDRANT_TIMEOUT", "3")
    monkeypatch.setenv("VECTORSCHEMA_QDRANT_MAX_IN_FLIGHT", "4")
    monkeypatch.setenv("VECTORSCHEMA_COUNT_TIMEOUT", "1.5")
    limits = settings.qdrant_limits()
    assert (limits.timeout, limits.max_in_flight, limits.count_timeout) == (3.0, 4, 1.5)
    monkeypatch.delenv("VECTORSCHEMA_QDRANT_TIMEOUT")
    monkeypatch.delenv("VECTORSCHEMA_QDRANT_MAX_IN_FLIGHT")
    monkeypatch.delenv("VECTORSCHEMA_COUNT_TIMEOUT")
    limits = settings.qdrant_limits()
    assert (limits.timeout, limits.max_in_flight, limits.count_timeout) == (10.0, 16, 5.0)


def test_the_operator_does_not_start(token: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf ends the operator when a startup handler fails permanently."""
    import kopf

    from vectorschema.k8s import handlers

    monkeypatch.setattr(settings, "SERVICE_ACCOUNT_TOKEN", token)
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.delenv("QDRANT_PATH", raising=False)
    with pytest.raises(kopf.PermanentError, match="running in a Pod without QDRANT_URL"):
        asyncio.run(
            handlers.configure(
                settings=kopf.OperatorSettings(), memo=kopf.Memo(), logger=logging.getLogger("t")
            )
        )


def test_backfill_caps_default_to_the_charts_values_and_zero_means_no_cap() -> None:
    from vectorschema.k8s import settings

    assert settings.backfill_caps({}) == (10, 2)
    assert settings.backfill_caps(
        {
            "VECTORSCHEMA_BACKFILL_MAX_JOBS": "0",
            "VECTORSCHEMA_BACKFILL_MAX_JOBS_PER_NAMESPACE": "5",
        }
    ) == (None, 5)


def test_backfill_pods_get_the_namespaces_url_else_the_admins_else_the_operators() -> None:
    from vectorschema.k8s import settings

    env = {"QDRANT_URL": "http://127.0.0.1:6333"}
    assert settings.backfill_qdrant_url(None, {}) is None  # embedded: no Pod reaches it
    assert settings.backfill_qdrant_url(None, env) == "http://127.0.0.1:6333"
    pods = {**env, "VECTORSCHEMA_BACKFILL_QDRANT_URL": "http://qdrant.svc:6333"}
    assert settings.backfill_qdrant_url(None, pods) == "http://qdrant.svc:6333"
    assert settings.backfill_qdrant_url("https://own.example", pods) == "https://own.example"


def test_the_operator_creates_its_peering_object_unless_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Helm chart ships the ClusterKopfPeering and sets `VECTORSCHEMA_ENSURE_PEERING`
    false: a Pod that started before Helm created it would make the install fail."""
    monkeypatch.delenv("VECTORSCHEMA_ENSURE_PEERING", raising=False)
    assert settings.ensure_peering() is True
    for off in ("false", "False", "0", "no"):
        monkeypatch.setenv("VECTORSCHEMA_ENSURE_PEERING", off)
        assert settings.ensure_peering() is False
    monkeypatch.setenv("VECTORSCHEMA_ENSURE_PEERING", "true")
    assert settings.ensure_peering() is True
