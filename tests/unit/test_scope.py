"""core.scope: Kubernetes label selectors, as `kubectl get -l` reads them."""

from __future__ import annotations

import pytest

from vectorschema.core.scope import LabelSelector, SelectorError
from vectorschema.k8s.settings import label_selector, metrics_port

GOLD_B = {"tier": "gold", "team": "b"}


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("", {}, True),
        ("", GOLD_B, True),
        ("team=b", GOLD_B, True),
        ("team==b", GOLD_B, True),
        ("team=a", GOLD_B, False),
        ("team!=a", GOLD_B, True),
        ("team!=b", GOLD_B, False),
        ("team!=b", {}, True),
        ("tier in (gold, silver)", GOLD_B, True),
        ("tier in (silver)", GOLD_B, False),
        ("tier notin (gold)", GOLD_B, False),
        ("tier notin (gold)", {}, True),
        ("team", GOLD_B, True),
        ("owner", GOLD_B, False),
        ("!owner", GOLD_B, True),
        ("!team", GOLD_B, False),
        ("tier in (gold,silver),team=b,!legacy", GOLD_B, True),
        ("tier in (gold,silver),team=b,!legacy", {**GOLD_B, "legacy": "1"}, False),
        ("example.com/team=b", {"example.com/team": "b"}, True),
        ("team=", {"team": ""}, True),
    ],
)
def test_selector_matches(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert LabelSelector.parse(selector).matches(labels) is matches


def test_no_labels_at_all() -> None:
    assert LabelSelector.parse("!team").matches(None)
    assert not LabelSelector.parse("team").matches(None)


@pytest.mark.parametrize(
    "selector",
    ["team b", "tier in (gold", "tier in gold", "a,,b", "=b", "tier in (go ld)", "k=v=w"],
)
def test_invalid_selectors_are_refused(selector: str) -> None:
    with pytest.raises(SelectorError):
        LabelSelector.parse(selector)


def test_settings_read_the_environment() -> None:
    assert metrics_port({}) is None
    assert metrics_port({"VECTORSCHEMA_METRICS_PORT": " "}) is None
    assert metrics_port({"VECTORSCHEMA_METRICS_PORT": "8080"}) == 8080
    with pytest.raises(ValueError, match="not a port number"):
        metrics_port({"VECTORSCHEMA_METRICS_PORT": "70000"})
    assert label_selector({}) == LabelSelector()
    assert label_selector({"VECTORSCHEMA_LABEL_SELECTOR": "team=b"}).matches({"team": "b"})
    with pytest.raises(SelectorError):
        label_selector({"VECTORSCHEMA_LABEL_SELECTOR": "team b"})
