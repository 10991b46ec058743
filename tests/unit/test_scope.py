"""core.scope: Kubernetes label selectors, as `kubectl get -l` reads them."""

from __future__ import annotations

from typing import Any

import pytest

from vectorschema.core.scope import LabelSelector, Scope, SelectorError
from vectorschema.k8s.settings import metrics_port, scope

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
    assert scope({}) == Scope()
    assert scope({}).matches(None, None)  # no selector: every resource, anywhere
    by_ns = scope({"VECTORSCHEMA_NAMESPACE_SELECTOR": "team=b"})
    assert by_ns.matches({"team": "b"}, {}) and not by_ns.matches({"team": "a"}, {})
    with pytest.raises(SelectorError):
        scope({"VECTORSCHEMA_NAMESPACE_SELECTOR": "team b"})
    opted = {"VECTORSCHEMA_OBJECT_LABEL_SCOPE": "true"}
    assert scope({"VECTORSCHEMA_LABEL_SELECTOR": "team=b", **opted}).matches({}, {"team": "b"})
    with pytest.raises(SelectorError):
        scope({"VECTORSCHEMA_LABEL_SELECTOR": "team b", **opted})


# --- issue 17, item 6: the scope is the admins', not the tenants' ----------------------------


def test_object_labels_select_nothing_without_the_admins_opt_in() -> None:
    with pytest.raises(SelectorError, match="VECTORSCHEMA_OBJECT_LABEL_SCOPE=true"):
        scope({"VECTORSCHEMA_LABEL_SELECTOR": "team=b"})
    with pytest.raises(SelectorError):
        scope({"VECTORSCHEMA_LABEL_SELECTOR": "team=b", "VECTORSCHEMA_OBJECT_LABEL_SCOPE": "no"})


@pytest.mark.parametrize(
    "own_labels",
    [{}, {"team": "a"}, {"team": "b"}, {"vectorschema.dev/installation": "gold"}],
)
def test_a_resources_own_labels_never_move_it_between_installations(
    own_labels: dict[str, str],
) -> None:
    """Two installations split by the Kubernetes namespace's labels (set by admins): a
    tenant relabelling its own resource stays with the installation of its namespace."""
    a = scope({"VECTORSCHEMA_NAMESPACE_SELECTOR": "team=a"})
    b = scope({"VECTORSCHEMA_NAMESPACE_SELECTOR": "team=b"})
    namespace_a = {"team": "a"}
    assert a.matches(namespace_a, own_labels)
    assert not b.matches(namespace_a, own_labels)
    # A namespace not listed yet is nobody's (until its labels are known).
    assert not a.matches(None, own_labels) and not b.matches(None, own_labels)


def test_the_handlers_scope_reads_the_namespace_index() -> None:
    """`handlers._in_scope` (the filter of every Namespace handler and of the webhook):
    the labels come from the index of Kubernetes namespaces, not from the resource."""
    import kopf

    from vectorschema.k8s.handlers import _in_scope

    memo = kopf.Memo()
    memo.scope = scope({"VECTORSCHEMA_NAMESPACE_SELECTOR": "team=a"})
    index: Any = {"ns-a": [{"team": "a"}], "ns-b": [{"team": "b"}]}
    assert _in_scope("ns-a", {"team": "b"}, memo, index)
    assert not _in_scope("ns-b", {"team": "a"}, memo, index)
    assert not _in_scope("ns-new", {"team": "a"}, memo, index)  # not listed yet: nobody's
    assert _in_scope("ns-new", {}, memo, index, unknown=True)  # the wake-up indices' reading
