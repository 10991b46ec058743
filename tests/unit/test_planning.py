"""Table-driven tests of the pure planner (`vectorschema.core.planning`).

No cluster and no Qdrant: desired schemas come from specs and plugins, observed ones are
built the way the gateway reports them (`vector_def_from_spec` of what was created).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from conftest import (
    IMAGE,
    IMAGE_VECTOR,
    LOCAL,
    OLD_SERVER,
    SERVER,
    TEXT,
    TEXT_VECTOR,
    dense,
    desired_of,
    inline,
    multidense,
    ns_spec,
    observed_of,
    plugin,
    sparse,
    vdef,
)

from vectorschema.api import ActionKind, PluginSpec, Strategy, VectorSpec
from vectorschema.core.actions import AtRisk, Plan
from vectorschema.core.approval import ApprovedBy, approval, needs_approval
from vectorschema.core.planning import (
    PluginConflict,
    PluginNotFound,
    fingerprint,
    make_plan,
    resolve_desired,
)
from vectorschema.core.report import report
from vectorschema.core.schema import (
    Capabilities,
    CollectionSettings,
    DesiredSchema,
    ObservedCollection,
)

AUTO = Strategy.AUTO
RECREATE = Strategy.RECREATE
CREATE = ActionKind.CREATE_COLLECTION
ADD = ActionKind.ADD_VECTOR
REMOVE = ActionKind.REMOVE_VECTOR
REPLACE = ActionKind.REPLACE_VECTOR
UPDATE = ActionKind.UPDATE_VECTOR
RECREATE_COLLECTION = ActionKind.RECREATE_COLLECTION
COLLECTION = "team-a_tenant"
TIME = "2026-01-02T03:04:05Z"


def plan_of(
    desired: DesiredSchema,
    observed: ObservedCollection | None,
    strategy: Strategy = AUTO,
    capabilities: Capabilities = SERVER,
    last_applied: list[str] | None = None,
) -> Plan:
    return make_plan(
        COLLECTION,
        desired,
        observed,
        strategy=strategy,
        capabilities=capabilities,
        last_applied=last_applied,
    )


def steps(plan: Plan) -> list[tuple[ActionKind, str]]:
    return [(a.kind, a.name) for a in plan.actions]


# --- resolve_desired ------------------------------------------------------------------


def test_union_of_plugins_keeps_plugin_order() -> None:
    spec = ns_spec(plugins=["text", "image", inline("bm25", sparse("bm25_v1", modifier="idf"))])
    plugins = {"image": plugin(IMAGE, multidense("colbert_v1", 128)), "text": plugin(TEXT)}

    desired = resolve_desired(spec, plugins)

    assert desired.names == [TEXT_VECTOR, IMAGE_VECTOR, "colbert_v1", "bm25_v1"]
    assert desired.origins == {
        TEXT_VECTOR: ("text",),
        IMAGE_VECTOR: ("image",),
        "colbert_v1": ("image",),
        "bm25_v1": ("bm25",),
    }
    assert desired.by_name["bm25_v1"] == vdef(sparse("bm25_v1", modifier="idf"))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(TEXT, TEXT, id="same-dense"),
        pytest.param(dense("v", datatype="float32"), dense("v"), id="explicit-float32-is-default"),
        pytest.param(sparse("s", modifier="idf"), sparse("s", modifier="idf"), id="same-sparse"),
        pytest.param(multidense("m", 128, "Dot"), multidense("m", 128, "Dot"), id="same-multi"),
        pytest.param(
            dense("v", on_disk=True, hnsw={"m": 16}, quantization={"type": "scalar"}),
            dense("v", onDisk=True, hnsw={"m": 16}, quantization={"type": "scalar"}),
            id="same-tuning",
        ),
    ],
)
def test_identical_definitions_merge(first: VectorSpec, second: VectorSpec) -> None:
    spec = ns_spec(plugins=["a", "b", "c"])
    plugins = {"a": plugin(first), "b": plugin(dense("other")), "c": plugin(second)}

    desired = resolve_desired(spec, plugins)

    assert desired.names == [first.name, "other"]
    assert desired.origins[first.name] == ("a", "c")
    assert desired.by_name[first.name] == vdef(first)


CONFLICTS = [
    pytest.param(dense("v", 4), dense("v", 8), id="size"),
    pytest.param(dense("v", distance="Cosine"), dense("v", distance="Dot"), id="distance"),
    pytest.param(dense("v"), dense("v", datatype="float16"), id="datatype"),
    pytest.param(dense("v", datatype="uint8"), dense("v", datatype="float16"), id="datatype-2"),
    pytest.param(dense("v"), sparse("v"), id="dense-vs-sparse"),
    pytest.param(dense("v"), multidense("v"), id="dense-vs-multidense"),
    pytest.param(sparse("v"), multidense("v"), id="sparse-vs-multidense"),
    pytest.param(sparse("v"), sparse("v", modifier="idf"), id="sparse-modifier"),
    pytest.param(sparse("v"), sparse("v", datatype="float16"), id="sparse-datatype"),
    pytest.param(dense("v"), dense("v", on_disk=True), id="tuning-on-disk"),
    pytest.param(dense("v", hnsw={"m": 16}), dense("v", hnsw={"m": 32}), id="tuning-hnsw"),
    pytest.param(
        dense("v", quantization={"type": "scalar"}),
        dense("v", quantization={"type": "binary"}),
        id="tuning-quantization",
    ),
]


@pytest.mark.parametrize(("first", "second"), CONFLICTS)
def test_conflicting_definitions_raise_plugin_conflict(
    first: VectorSpec, second: VectorSpec
) -> None:
    spec = ns_spec(plugins=["text-extractor", "image-extractor"])
    plugins = {"text-extractor": plugin(first), "image-extractor": plugin(second)}

    with pytest.raises(PluginConflict) as caught:
        resolve_desired(spec, plugins)

    assert caught.value.vector == "v"
    assert caught.value.plugins == ("text-extractor", "image-extractor")
    message = str(caught.value)
    assert "'v'" in message
    assert "'text-extractor'" in message
    assert "'image-extractor'" in message


def test_conflict_with_merged_vector_names_first_bringer_and_newcomer() -> None:
    spec = ns_spec(plugins=["a", "b", inline("c", dense("v", 8))])
    plugins = {"a": plugin(dense("v", 4)), "b": plugin(dense("v", 4))}

    with pytest.raises(PluginConflict) as caught:
        resolve_desired(spec, plugins)

    assert caught.value.plugins == ("a", "c")
    assert "'a'" in str(caught.value) and "'c'" in str(caught.value)


def test_missing_plugins_are_all_listed() -> None:
    spec = ns_spec(plugins=["gone-1", "text", "gone-2", inline("inline", dense("x"))])

    with pytest.raises(PluginNotFound) as caught:
        resolve_desired(spec, {"text": plugin(TEXT)})

    assert caught.value.missing == ["gone-1", "gone-2"]
    assert "gone-1" in str(caught.value) and "gone-2" in str(caught.value)


def test_missing_plugin_is_reported_before_a_conflict() -> None:
    spec = ns_spec(plugins=["a", "b", "gone"])
    plugins = {"a": plugin(dense("v", 4)), "b": plugin(dense("v", 8))}

    with pytest.raises(PluginNotFound):
        resolve_desired(spec, plugins)


def test_inline_vectors_need_no_plugin_and_win_over_a_cluster_plugin() -> None:
    spec = ns_spec(plugins=[inline("text", dense("inline_v", 16))])

    desired = resolve_desired(spec, {"text": plugin(TEXT)})

    assert desired.names == ["inline_v"]
    assert desired.origins == {"inline_v": ("text",)}
    assert resolve_desired(spec, {}).names == ["inline_v"]


def test_no_plugins_means_no_vectors() -> None:
    desired = resolve_desired(ns_spec(), {})
    assert desired.vectors == ()


def test_collection_settings_come_from_the_spec() -> None:
    desired = desired_of(TEXT, shardNumber=3, replicationFactor=2, onDiskPayload=True)
    assert desired.settings.shard_number == 3
    assert desired.settings.replication_factor == 2
    assert desired.settings.on_disk_payload is True


# --- make_plan: every action kind -------------------------------------------------------

V = "v"
PLAN_CASES = [
    # (desired, observed (None = no collection), strategy, capabilities, expected steps)
    pytest.param([TEXT, IMAGE], None, AUTO, SERVER, [(CREATE, "")], id="create"),
    pytest.param([TEXT, IMAGE], None, RECREATE, SERVER, [(CREATE, "")], id="create-recreate"),
    pytest.param([], None, AUTO, SERVER, [(CREATE, "")], id="create-no-vectors"),
    pytest.param([TEXT, IMAGE], [TEXT], AUTO, SERVER, [(ADD, IMAGE_VECTOR)], id="add-dense"),
    pytest.param([TEXT, sparse("s")], [TEXT], AUTO, SERVER, [(ADD, "s")], id="add-sparse"),
    pytest.param(
        [TEXT, sparse("s", modifier="idf", datatype="float16")],
        [TEXT],
        AUTO,
        SERVER,
        [(ADD, "s")],
        id="add-sparse-idf",
    ),
    pytest.param([TEXT, multidense("m", 128)], [TEXT], AUTO, SERVER, [(ADD, "m")], id="add-multi"),
    pytest.param(
        [TEXT, dense("a"), sparse("b")],
        [TEXT],
        AUTO,
        LOCAL,
        [(ADD, "a"), (ADD, "b")],
        id="add-two-local",
    ),
    pytest.param([TEXT], [TEXT, IMAGE], AUTO, SERVER, [(REMOVE, IMAGE_VECTOR)], id="remove-dense"),
    pytest.param([TEXT], [TEXT, sparse("s")], AUTO, SERVER, [(REMOVE, "s")], id="remove-sparse"),
    pytest.param([TEXT], [multidense("m"), TEXT], AUTO, SERVER, [(REMOVE, "m")], id="remove-multi"),
    pytest.param([], [TEXT], AUTO, SERVER, [(REMOVE, TEXT_VECTOR)], id="remove-last"),
    pytest.param([dense(V, 8)], [dense(V, 4)], AUTO, SERVER, [(REPLACE, V)], id="replace-size"),
    pytest.param(
        [dense(V, distance="Dot")],
        [dense(V, distance="Cosine")],
        AUTO,
        SERVER,
        [(REPLACE, V)],
        id="replace-distance",
    ),
    pytest.param(
        [dense(V, datatype="float16")], [dense(V)], AUTO, SERVER, [(REPLACE, V)], id="replace-dtype"
    ),
    pytest.param(
        [dense(V, datatype="uint8")],
        [dense(V, datatype="float16")],
        AUTO,
        SERVER,
        [(REPLACE, V)],
        id="replace-dtype-2",
    ),
    pytest.param(
        [multidense(V)], [dense(V)], AUTO, SERVER, [(REPLACE, V)], id="replace-dense-to-multi"
    ),
    pytest.param(
        [dense(V)], [multidense(V)], AUTO, SERVER, [(REPLACE, V)], id="replace-multi-to-dense"
    ),
    pytest.param(
        [sparse(V)], [dense(V)], AUTO, SERVER, [(REPLACE, V)], id="replace-dense-to-sparse"
    ),
    pytest.param(
        [sparse(V, modifier="idf")],
        [sparse(V)],
        AUTO,
        SERVER,
        [(REPLACE, V)],
        id="replace-modifier",
    ),
    pytest.param(
        [sparse(V)], [sparse(V, modifier="idf")], AUTO, SERVER, [(REPLACE, V)], id="replace-unidf"
    ),
    pytest.param(
        [sparse(V, datatype="float16")],
        [sparse(V)],
        AUTO,
        LOCAL,
        [(REPLACE, V)],
        id="replace-sparse-dtype-local",
    ),
    pytest.param(
        [dense(V, on_disk=True)], [dense(V)], AUTO, SERVER, [(UPDATE, V)], id="update-on-disk"
    ),
    pytest.param(
        [dense(V, hnsw={"m": 32, "efConstruct": 200})],
        [dense(V, hnsw={"m": 16})],
        AUTO,
        SERVER,
        [(UPDATE, V)],
        id="update-hnsw",
    ),
    pytest.param(
        [dense(V, quantization={"type": "scalar", "quantile": 0.99})],
        [dense(V)],
        AUTO,
        SERVER,
        [(UPDATE, V)],
        id="update-quantization",
    ),
    pytest.param(
        [dense(V)],
        [dense(V, quantization={"type": "binary"})],
        AUTO,
        SERVER,
        [(UPDATE, V)],
        id="update-drop-quantization",
    ),
    pytest.param(
        [multidense(V, on_disk=True)],
        [multidense(V)],
        AUTO,
        SERVER,
        [(UPDATE, V)],
        id="update-multi",
    ),
    pytest.param(
        [sparse(V, hnsw={"fullScanThreshold": 5000})],
        [sparse(V)],
        AUTO,
        SERVER,
        [(UPDATE, V)],
        id="update-sparse-index",
    ),
    pytest.param(
        [dense(V, on_disk=True)],
        [dense(V)],
        AUTO,
        OLD_SERVER,
        [(UPDATE, V)],
        id="update-old-server",
    ),
    pytest.param([dense(V, on_disk=True)], [dense(V)], AUTO, LOCAL, [], id="no-update-local"),
    pytest.param([TEXT, IMAGE], [TEXT, IMAGE], AUTO, SERVER, [], id="equal"),
    pytest.param([IMAGE, TEXT], [TEXT, IMAGE], AUTO, SERVER, [], id="equal-other-order"),
    pytest.param(
        [dense(V, datatype="float32"), sparse("s", modifier="none")],
        [dense(V), sparse("s")],
        AUTO,
        SERVER,
        [],
        id="equal-explicit-defaults",
    ),
    pytest.param(
        [multidense("m", 128, "Dot"), sparse("s", modifier="idf")],
        [sparse("s", modifier="idf"), multidense("m", 128, "Dot")],
        RECREATE,
        SERVER,
        [],
        id="equal-recreate",
    ),
    pytest.param([], [], AUTO, SERVER, [], id="equal-empty"),
    # Recreate: any change drops and recreates the collection.
    pytest.param([TEXT, IMAGE], [TEXT], RECREATE, SERVER, [(RECREATE_COLLECTION, "")], id="rc-add"),
    pytest.param([TEXT], [TEXT, IMAGE], RECREATE, SERVER, [(RECREATE_COLLECTION, "")], id="rc-rm"),
    pytest.param(
        [dense(V, 8)], [dense(V, 4)], RECREATE, SERVER, [(RECREATE_COLLECTION, "")], id="rc-replace"
    ),
    pytest.param(
        [dense(V, on_disk=True)],
        [dense(V)],
        RECREATE,
        SERVER,
        [(RECREATE_COLLECTION, "")],
        id="rc-retune",
    ),
    pytest.param([dense(V, on_disk=True)], [dense(V)], RECREATE, LOCAL, [], id="rc-retune-local"),
    pytest.param(
        [TEXT, sparse("s")], [TEXT], RECREATE, LOCAL, [(RECREATE_COLLECTION, "")], id="rc-local"
    ),
    # A server older than 1.18: Auto cannot add or remove a vector in place.
    pytest.param(
        [TEXT, IMAGE], [TEXT], AUTO, OLD_SERVER, [(RECREATE_COLLECTION, "")], id="old-add"
    ),
    pytest.param([TEXT], [TEXT, IMAGE], AUTO, OLD_SERVER, [(RECREATE_COLLECTION, "")], id="old-rm"),
    pytest.param(
        [dense(V, 8)],
        [dense(V, 4)],
        AUTO,
        OLD_SERVER,
        [(RECREATE_COLLECTION, "")],
        id="old-replace",
    ),
    pytest.param([TEXT, IMAGE], None, AUTO, OLD_SERVER, [(CREATE, "")], id="old-create"),
]


@pytest.mark.parametrize(
    ("desired", "observed", "strategy", "capabilities", "expected"), PLAN_CASES
)
def test_make_plan(
    desired: list[VectorSpec],
    observed: list[VectorSpec] | None,
    strategy: Strategy,
    capabilities: Capabilities,
    expected: list[tuple[ActionKind, str]],
) -> None:
    live = None if observed is None else observed_of(*observed, points=10)

    plan = plan_of(desired_of(*desired), live, strategy, capabilities)

    assert steps(plan) == expected
    assert plan.empty is (expected == [])
    assert plan.collection == COLLECTION
    assert plan.drift is False
    destructive_kinds = {REMOVE, REPLACE, RECREATE_COLLECTION}
    assert plan.destructive is any(kind in destructive_kinds for kind, _ in expected)
    for action, shown in zip(plan.actions, plan.to_status(AtRisk(0)).actions, strict=True):
        assert action.destructive is (action.kind in destructive_kinds)
        assert shown.action is action.kind
        assert shown.destructive is action.destructive
        assert shown.vector == (action.name or None)


def test_create_collection_carries_desired_vectors_and_settings() -> None:
    desired = desired_of(TEXT, sparse("s"), shardNumber=2, onDiskPayload=True)

    (action,) = plan_of(desired, None).actions

    assert action.vectors == desired.vectors
    assert action.settings == desired.settings
    assert "2 vector(s)" in action.detail


def test_add_and_replace_carry_the_new_definition() -> None:
    desired = desired_of(dense(V, 8), IMAGE)
    plan = plan_of(desired, observed_of(dense(V, 4)))

    replace_action, add_action = plan.actions
    assert replace_action.kind is REPLACE
    assert replace_action.vector == vdef(dense(V, 8))
    assert replace_action.old == vdef(dense(V, 4))
    assert "dense 4" in replace_action.detail and "dense 8" in replace_action.detail
    assert add_action.kind is ADD
    assert add_action.vector == vdef(IMAGE)


def test_update_vector_carries_the_new_tuning_and_says_what_changes() -> None:
    plan = plan_of(desired_of(dense(V, on_disk=True)), observed_of(dense(V)))

    (action,) = plan.actions
    assert action.vector == vdef(dense(V, on_disk=True))
    assert action.old == vdef(dense(V))
    assert "onDisk None -> True" in action.detail


def test_an_unset_hnsw_or_on_disk_is_no_opinion_so_a_kept_setting_never_replans() -> None:
    """A real Qdrant 1.18.3 keeps a per-vector HNSW `m` (and the on-disk flag) after an
    update that leaves them unset (found by `make conformance`): planning "unset" as a
    change would write the same update on every pass, for ever."""
    kept = dense(V, on_disk=True, hnsw={"m": 8, "efConstruct": 64})

    assert plan_of(desired_of(dense(V)), observed_of(kept)).empty
    assert plan_of(desired_of(dense(V, hnsw={"m": 8})), observed_of(kept)).empty
    (action,) = plan_of(desired_of(dense(V, hnsw={"m": 16})), observed_of(kept)).actions
    assert action.kind is UPDATE and "m" in action.detail
    (action,) = plan_of(desired_of(dense(V, on_disk=False)), observed_of(kept)).actions
    assert action.kind is UPDATE


def test_quantization_left_unset_is_removed() -> None:
    quantized = dense(V, quantization={"type": "scalar", "quantile": 0.99})

    (action,) = plan_of(desired_of(dense(V)), observed_of(quantized)).actions
    assert action.kind is UPDATE and action.vector == vdef(dense(V))


def test_tuning_is_not_planned_when_qdrant_cannot_apply_it_and_a_note_says_so() -> None:
    desired = desired_of(dense(V, on_disk=True), IMAGE)

    plan = plan_of(desired, observed_of(dense(V)), capabilities=LOCAL)

    assert steps(plan) == [(ADD, IMAGE_VECTOR)]
    assert plan.notes == (
        "tuning of v is not applied: this Qdrant does not support updating vector parameters",
    )


def test_actions_are_ordered_removes_replaces_adds_updates() -> None:
    desired = desired_of(
        dense("tuned", on_disk=True),
        dense("new1"),
        dense("changed1", 8),
        dense("kept"),
        sparse("new2"),
        sparse("changed2", modifier="idf"),
    )
    observed = observed_of(
        dense("gone1"),
        dense("changed1", 4),
        dense("kept"),
        sparse("changed2"),
        dense("tuned"),
        sparse("gone2"),
    )

    plan = plan_of(desired, observed)

    assert steps(plan) == [
        (REMOVE, "gone1"),
        (REMOVE, "gone2"),
        (REPLACE, "changed1"),
        (REPLACE, "changed2"),
        (ADD, "new1"),
        (ADD, "new2"),
        (UPDATE, "tuned"),
    ]
    assert plan.destructive
    assert plan.vectors_at_risk == ["gone1", "gone2", "changed1", "changed2"]
    assert plan.reason == "deletes the stored data of: gone1, gone2, changed1, changed2"


@pytest.mark.parametrize(
    ("desired", "observed", "at_risk"),
    [
        pytest.param([TEXT, IMAGE], [TEXT], [], id="add"),
        pytest.param([dense(V, on_disk=True)], [dense(V)], [], id="update"),
        pytest.param([TEXT], [TEXT, IMAGE], [IMAGE_VECTOR], id="remove"),
        pytest.param([dense(V, 8), TEXT], [TEXT, dense(V, 4)], [V], id="replace"),
        pytest.param([TEXT, IMAGE], [TEXT, IMAGE], [], id="empty"),
    ],
)
def test_vectors_at_risk(
    desired: list[VectorSpec], observed: list[VectorSpec], at_risk: list[str]
) -> None:
    plan = plan_of(desired_of(*desired), observed_of(*observed, points=7))

    assert plan.vectors_at_risk == at_risk
    assert plan.to_status(AtRisk(7)).vectors_at_risk == at_risk
    assert plan.to_status(AtRisk(7)).points_at_risk == 7


def test_vectors_at_risk_of_a_recreate_are_all_live_vectors() -> None:
    """BUG: `Plan.vectors_at_risk` says "(all of them for a recreate)" but returns [].

    `status.plan.vectorsAtRisk` then reads `[]` while `pointsAtRisk` is every point: a
    person deciding whether to approve is told no vector's data is at risk.
    """
    plan = plan_of(desired_of(TEXT, IMAGE), observed_of(TEXT, sparse("s"), points=1500), RECREATE)

    assert plan.recreates
    assert plan.vectors_at_risk == [TEXT_VECTOR, "s"]


def test_recreate_strategy_reason() -> None:
    plan = plan_of(desired_of(TEXT, IMAGE), observed_of(TEXT), RECREATE)

    assert plan.reason == "strategy is Recreate: the collection is dropped and created again"
    (action,) = plan.actions
    assert action.vectors == desired_of(TEXT, IMAGE).vectors
    assert action.detail == f"drop and recreate: add {IMAGE_VECTOR}"


def test_recreate_detail_lists_every_change() -> None:
    desired = desired_of(dense("changed", 8), dense("tuned", on_disk=True), dense("new"))
    observed = observed_of(dense("changed", 4), dense("tuned"), dense("gone"))

    (action,) = plan_of(desired, observed, RECREATE).actions

    assert action.detail == (
        "drop and recreate: add new; remove gone; replace changed; retune tuned"
    )


def test_old_server_falls_back_to_recreate_and_says_why() -> None:
    plan = plan_of(desired_of(TEXT, IMAGE), observed_of(TEXT), capabilities=OLD_SERVER)

    assert steps(plan) == [(RECREATE_COLLECTION, "")]
    assert "1.17.1" in plan.reason
    assert "1.18" in plan.reason
    assert needs_approval(plan, AUTO)


@pytest.mark.parametrize(
    ("desired_shards", "observed_shards", "capabilities", "expected"),
    [
        pytest.param(3, 1, SERVER, [(RECREATE_COLLECTION, "")], id="changed"),
        pytest.param(
            3, 1, replace(SERVER, reports_cluster_settings=False), [], id="changed-not-reported"
        ),
        pytest.param(3, 3, SERVER, [], id="same"),
        pytest.param(None, 3, SERVER, [], id="unset-in-spec"),
        pytest.param(3, None, SERVER, [], id="unknown-live"),
    ],
)
def test_shard_number_change_needs_a_recreate(
    desired_shards: int | None,
    observed_shards: int | None,
    capabilities: Capabilities,
    expected: list[tuple[ActionKind, str]],
) -> None:
    desired = desired_of(TEXT, shardNumber=desired_shards)
    observed = observed_of(TEXT, shard_number=observed_shards, points=5)

    plan = plan_of(desired, observed, capabilities=capabilities)

    assert steps(plan) == expected
    if expected:
        assert (
            plan.reason
            == f"shardNumber {observed_shards} -> {desired_shards} cannot change in place"
        )
        assert plan.destructive
        assert needs_approval(plan, AUTO)


def test_shard_change_with_a_vector_change_recreates_with_everything() -> None:
    plan = plan_of(
        desired_of(TEXT, IMAGE, shardNumber=2), observed_of(TEXT, shard_number=1), AUTO, SERVER
    )

    assert steps(plan) == [(RECREATE_COLLECTION, "")]
    assert plan.actions[0].vectors == desired_of(TEXT, IMAGE).vectors
    assert plan.actions[0].settings.shard_number == 2


@pytest.mark.parametrize(
    ("field", "observed", "desired", "shown"),
    [
        ("replicationFactor", CollectionSettings(1, 1, 1, True), 2, "replicationFactor 1 -> 2"),
        (
            "writeConsistencyFactor",
            CollectionSettings(1, 3, 1, True),
            2,
            "writeConsistencyFactor 1 -> 2",
        ),
        ("onDiskPayload", CollectionSettings(1, 1, 1, True), False, "onDiskPayload true -> false"),
        ("shardNumber", CollectionSettings(1, 1, 1, True), 4, "shardNumber 1 -> 4"),
    ],
)
@pytest.mark.parametrize("capabilities", [SERVER, LOCAL], ids=["server", "local"])
def test_every_creation_only_setting_change_is_a_recreate_never_silent(
    field: str,
    observed: CollectionSettings,
    desired: Any,
    shown: str,
    capabilities: Capabilities,
) -> None:
    """On a server and on the embedded store alike (it records its creation settings):
    a change is a recreate waiting for approval, never a quiet no-op."""
    plan = plan_of(
        desired_of(TEXT, **{field: desired}),
        observed_of(TEXT, settings=observed, points=5),
        capabilities=capabilities,
    )
    assert steps(plan) == [(RECREATE_COLLECTION, "")]
    assert plan.reason == f"{shown} cannot change in place"
    assert needs_approval(plan, AUTO)


def test_unset_or_equal_creation_settings_plan_nothing() -> None:
    observed = observed_of(TEXT, settings=CollectionSettings(2, 2, 1, True))
    assert plan_of(desired_of(TEXT), observed).empty
    assert plan_of(desired_of(TEXT, shardNumber=2, onDiskPayload=True), observed).empty


def test_several_creation_settings_are_named_together() -> None:
    plan = plan_of(
        desired_of(TEXT, replicationFactor=3, onDiskPayload=False),
        observed_of(TEXT, settings=CollectionSettings(1, 1, 1, True)),
    )
    assert (
        plan.reason
        == "onDiskPayload true -> false, replicationFactor 1 -> 3 cannot change in place"
    )


# --- drift ----------------------------------------------------------------------------


def test_vector_removed_by_hand_is_drift_and_needs_approval_even_to_add_it_back() -> None:
    plan = plan_of(
        desired_of(TEXT, IMAGE),
        observed_of(TEXT, points=100),
        last_applied=[TEXT_VECTOR, IMAGE_VECTOR],
    )

    assert steps(plan) == [(ADD, IMAGE_VECTOR)]
    assert not plan.destructive
    assert plan.drift
    assert f"removed {IMAGE_VECTOR}" in plan.reason
    assert "outside the operator" in plan.reason
    assert needs_approval(plan, AUTO)
    assert not approval(plan, ns_spec(), None).approved


def test_vector_added_by_hand_is_drift_and_keeps_the_plan_reason() -> None:
    plan = plan_of(
        desired_of(TEXT), observed_of(TEXT, sparse("manual")), last_applied=[TEXT_VECTOR]
    )

    assert steps(plan) == [(REMOVE, "manual")]
    assert plan.drift
    assert "added manual" in plan.reason
    assert plan.reason.endswith("deletes the stored data of: manual")


@pytest.mark.parametrize(
    ("observed", "last_applied"),
    [
        pytest.param([TEXT], None, id="nothing-recorded"),
        pytest.param([TEXT], [TEXT_VECTOR], id="live-as-recorded"),
        pytest.param(None, [TEXT_VECTOR, IMAGE_VECTOR], id="collection-deleted"),
    ],
)
def test_no_drift(observed: list[VectorSpec] | None, last_applied: list[str] | None) -> None:
    live = None if observed is None else observed_of(*observed)

    plan = plan_of(desired_of(TEXT, IMAGE), live, last_applied=last_applied)

    assert not plan.drift
    assert not needs_approval(plan, AUTO)
    assert approval(plan, ns_spec(), None).by is ApprovedBy.NOT_NEEDED


def test_collection_deleted_by_hand_is_created_again_without_approval() -> None:
    plan = plan_of(desired_of(TEXT, IMAGE), None, RECREATE, last_applied=[TEXT_VECTOR])

    assert steps(plan) == [(CREATE, "")]
    assert not plan.drift
    assert not needs_approval(plan, RECREATE)


def test_own_change_with_a_lost_status_write_is_not_drift() -> None:
    """The operator added IMAGE, then its status write was lost (status still lists TEXT
    only); the spec moved on to add a sparse vector: the plan adds it without approval."""
    plan = plan_of(
        desired_of(TEXT, IMAGE, sparse("s")),
        observed_of(TEXT, IMAGE),
        last_applied=[TEXT_VECTOR],
    )

    assert steps(plan) == [(ADD, "s")]
    assert not plan.drift
    assert not needs_approval(plan, AUTO)


def test_own_removal_with_a_lost_status_write_is_not_drift() -> None:
    plan = plan_of(
        desired_of(TEXT, sparse("s")), observed_of(TEXT), last_applied=[TEXT_VECTOR, IMAGE_VECTOR]
    )

    assert steps(plan) == [(ADD, "s")]
    assert not plan.drift


def test_vector_added_by_hand_with_another_definition_is_drift() -> None:
    plan = plan_of(
        desired_of(TEXT, IMAGE),
        observed_of(TEXT, dense(IMAGE_VECTOR, 3, "Dot")),
        RECREATE,
        last_applied=[TEXT_VECTOR],
    )

    assert plan.drift
    assert f"added {IMAGE_VECTOR}" in plan.reason


def test_hand_change_that_matches_the_spec_is_no_plan() -> None:
    plan = plan_of(desired_of(TEXT, IMAGE), observed_of(TEXT, IMAGE), last_applied=[TEXT_VECTOR])

    assert plan.empty
    assert not plan.drift


# --- fingerprint ----------------------------------------------------------------------

FP_DESIRED = desired_of(TEXT, IMAGE, sparse("s"))
FP_OBSERVED = observed_of(TEXT, sparse("s"), points=1500)


def fp(
    desired: DesiredSchema = FP_DESIRED,
    observed: ObservedCollection | None = FP_OBSERVED,
    strategy: Strategy = AUTO,
    capabilities: Capabilities = SERVER,
    collection: str = COLLECTION,
) -> str:
    return fingerprint(collection, desired, observed, strategy, capabilities)


def test_fingerprint_is_16_hex_chars_and_the_plans() -> None:
    value = fp()
    assert re.fullmatch(r"[0-9a-f]{16}", value)
    assert plan_of(FP_DESIRED, FP_OBSERVED).fingerprint == value


def test_fingerprint_is_stable() -> None:
    assert fp() == fp()
    # the same schemas, built again, in another order
    assert fp(desired_of(sparse("s"), IMAGE, TEXT), observed_of(sparse("s"), TEXT)) == fp()
    # not an input: the points count and the metadata (ownership stamp)
    assert fp(observed=replace(FP_OBSERVED, points_count=0)) == fp()
    assert fp(observed=replace(FP_OBSERVED, metadata={"vectorschema.dev/owner": "x/y"})) == fp()


def test_fingerprint_is_the_same_across_operator_versions() -> None:
    """An approval pinned to a fingerprint (`confirmPlan`, the spent plans on the
    collection) must mean the same plan after an upgrade: a change to how the documents
    are built (e.g. caching their keys) must not change the hash."""
    assert fp() == "00eb8d7d6459979e"


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(lambda: fp(desired=desired_of(TEXT, IMAGE)), id="desired-vector-dropped"),
        pytest.param(
            lambda: fp(desired=desired_of(TEXT, dense(IMAGE_VECTOR, 512), sparse("s"))),
            id="desired-size",
        ),
        pytest.param(
            lambda: fp(desired=desired_of(TEXT, IMAGE, sparse("s", modifier="idf"))),
            id="desired-modifier",
        ),
        pytest.param(
            lambda: fp(
                desired=desired_of(TEXT, dense(IMAGE_VECTOR, 768, on_disk=True), sparse("s"))
            ),
            id="desired-tuning",
        ),
        pytest.param(
            lambda: fp(desired=desired_of(TEXT, IMAGE, sparse("s"), shardNumber=2)),
            id="desired-settings",
        ),
        pytest.param(lambda: fp(observed=observed_of(TEXT, points=1500)), id="observed-vectors"),
        pytest.param(
            lambda: fp(observed=observed_of(TEXT, sparse("s", datatype="float16"), points=1500)),
            id="observed-datatype",
        ),
        pytest.param(
            lambda: fp(observed=observed_of(TEXT, sparse("s"), points=1500, shard_number=2)),
            id="observed-settings",
        ),
        pytest.param(lambda: fp(observed=None), id="observed-gone"),
        pytest.param(lambda: fp(strategy=RECREATE), id="strategy"),
        pytest.param(lambda: fp(capabilities=OLD_SERVER), id="server-cannot-in-place"),
        pytest.param(lambda: fp(collection="other"), id="collection"),
    ],
)
def test_fingerprint_changes_with_any_input(changed: Callable[[], str]) -> None:
    assert changed() != fp()


# --- approval -------------------------------------------------------------------------


def add_plan(strategy: Strategy = AUTO) -> Plan:
    return plan_of(desired_of(TEXT, IMAGE), observed_of(TEXT, points=10), strategy)


def remove_plan(strategy: Strategy = AUTO) -> Plan:
    return plan_of(desired_of(TEXT), observed_of(TEXT, IMAGE, points=10), strategy)


def create_plan(strategy: Strategy = AUTO) -> Plan:
    return plan_of(desired_of(TEXT, IMAGE), None, strategy)


def retune_plan(strategy: Strategy = AUTO) -> Plan:
    return plan_of(desired_of(dense(V, on_disk=True)), observed_of(dense(V)), strategy)


STALE = "0123456789abcdef"
PLANS = {"add": add_plan, "remove": remove_plan, "create": create_plan, "retune": retune_plan}


@pytest.mark.parametrize(
    ("kind", "strategy", "confirm", "confirm_plan", "annotation", "by", "message"),
    [
        # (plan, strategy, confirm, confirmPlan, annotation, approved by (None: waits), message)
        pytest.param("add", AUTO, False, None, None, ApprovedBy.NOT_NEEDED, "", id="auto-add"),
        pytest.param("retune", AUTO, False, None, None, ApprovedBy.NOT_NEEDED, "", id="auto-tune"),
        pytest.param(
            "create", AUTO, False, None, None, ApprovedBy.NOT_NEEDED, "", id="auto-create"
        ),
        pytest.param(
            "add", AUTO, False, "stale", "stale", ApprovedBy.NOT_NEEDED, "", id="auto-add-stale-pin"
        ),
        pytest.param("remove", AUTO, False, None, None, None, "", id="destructive-waits"),
        pytest.param(
            "remove", AUTO, True, None, None, ApprovedBy.CONFIRM, "confirm: true", id="confirm"
        ),
        pytest.param(
            "remove", AUTO, False, "match", None, ApprovedBy.CONFIRM_PLAN, "confirmPlan", id="pin"
        ),
        pytest.param(
            "remove",
            AUTO,
            True,
            "match",
            None,
            ApprovedBy.CONFIRM_PLAN,
            "confirmPlan",
            id="pin-and-confirm",
        ),
        pytest.param(
            "remove", AUTO, True, "stale", None, None, "does not match", id="stale-pin-blocks"
        ),
        pytest.param("remove", AUTO, False, "stale", None, None, "does not match", id="stale-pin"),
        pytest.param(
            "remove", AUTO, False, None, "match", ApprovedBy.ANNOTATION, "once", id="annotation"
        ),
        pytest.param(
            "remove",
            AUTO,
            False,
            "stale",
            "match",
            ApprovedBy.ANNOTATION,
            "once",
            id="annotation-beats-stale-pin",
        ),
        pytest.param("remove", AUTO, False, None, "stale", None, "", id="stale-annotation"),
        pytest.param(
            "remove",
            AUTO,
            True,
            None,
            "stale",
            ApprovedBy.CONFIRM,
            "confirm: true",
            id="stale-annotation-confirm",
        ),
        pytest.param("add", RECREATE, False, None, None, None, "", id="recreate-add-waits"),
        pytest.param("retune", RECREATE, False, None, None, None, "", id="recreate-tune-waits"),
        pytest.param("remove", RECREATE, False, None, None, None, "", id="recreate-rm-waits"),
        pytest.param(
            "create", RECREATE, False, None, None, ApprovedBy.NOT_NEEDED, "", id="recreate-create"
        ),
        pytest.param(
            "add", RECREATE, True, None, None, ApprovedBy.CONFIRM, "confirm", id="recreate-confirm"
        ),
        pytest.param(
            "add", RECREATE, False, "match", None, ApprovedBy.CONFIRM_PLAN, "", id="recreate-pin"
        ),
        pytest.param(
            "add", RECREATE, True, "stale", None, None, "does not match", id="recreate-stale-pin"
        ),
        pytest.param(
            "add", RECREATE, False, None, "match", ApprovedBy.ANNOTATION, "", id="recreate-annot"
        ),
    ],
)
def test_approval(
    kind: str,
    strategy: Strategy,
    confirm: bool,
    confirm_plan: str | None,
    annotation: str | None,
    by: ApprovedBy | None,
    message: str,
) -> None:
    plan = PLANS[kind](strategy)

    def pinned(which: str | None) -> str | None:
        return {"match": plan.fingerprint, "stale": STALE, None: None}[which]

    spec = ns_spec(strategy=strategy.value, confirm=confirm, confirmPlan=pinned(confirm_plan))

    verdict = approval(plan, spec, pinned(annotation))

    assert verdict.approved is (by is not None)
    assert verdict.by is by
    assert message in verdict.message
    if confirm_plan == "stale" and by is None:
        assert STALE in verdict.message and plan.fingerprint in verdict.message


def test_recreate_strategy_plan_needs_approval_for_every_change() -> None:
    assert needs_approval(add_plan(RECREATE), RECREATE)
    assert needs_approval(retune_plan(RECREATE), RECREATE)
    assert not needs_approval(create_plan(RECREATE), RECREATE)
    assert not needs_approval(add_plan(AUTO), AUTO)
    assert needs_approval(remove_plan(AUTO), AUTO)


def test_empty_plan_needs_no_approval() -> None:
    plan = plan_of(desired_of(TEXT), observed_of(TEXT), RECREATE)
    assert not needs_approval(plan, RECREATE)
    verdict = approval(plan, ns_spec(strategy="Recreate", confirmPlan=STALE), STALE)
    assert verdict.approved and verdict.by is ApprovedBy.NOT_NEEDED


def test_annotation_approves_only_the_plan_it_names() -> None:
    first = remove_plan()
    assert approval(first, ns_spec(), first.fingerprint).by is ApprovedBy.ANNOTATION

    # once applied, the next destructive change is another plan: the annotation is stale
    after = plan_of(desired_of(), observed_of(TEXT, points=10))
    assert after.fingerprint != first.fingerprint
    assert not approval(after, ns_spec(), first.fingerprint).approved


# --- report: the seed's reconfigure response ------------------------------------------

SEED_SPEC = {
    "plugins": [{"name": "text"}, {"name": "image"}],
    "collections": [
        {"id": "col_xxx", "plugins": ["text"]},
        {"id": "col_yyy", "plugins": ["image"]},
    ],
    "confirm": True,
}
SEED_PLUGINS: dict[str, PluginSpec] = {"text": plugin(TEXT), "image": plugin(IMAGE)}
SEED_MESSAGE = (
    "Qdrant collection reconfigured with 1 new vector(s). 1500 points were deleted. "
    "Re-trigger batches on the listed collections to re-ingest data with the new vectors."
)


def test_report_is_the_seed_example_under_recreate() -> None:
    spec = ns_spec(SEED_SPEC, strategy="Recreate")
    desired = resolve_desired(spec, SEED_PLUGINS)
    observed = observed_of(TEXT, points=1500)
    plan = plan_of(desired, observed, RECREATE)

    result = report(plan, desired, observed, spec, time=TIME)

    assert result.status == "reconfigured"
    assert result.previous_points_count == 1500
    assert result.vectors_added == [IMAGE_VECTOR]
    assert result.vectors_total == [TEXT_VECTOR, IMAGE_VECTOR]
    assert result.collections_to_reprocess == ["col_xxx", "col_yyy"]
    assert result.message == SEED_MESSAGE
    assert result.points_deleted == 1500
    assert result.vectors_removed == []
    assert result.vectors_replaced == []
    assert result.strategy is RECREATE
    assert result.plan_fingerprint == plan.fingerprint
    assert result.time == TIME
    wire = result.to_wire()
    seed_keys = {
        "status": "status",
        "previousPointsCount": "previous_points_count",
        "vectorsAdded": "vectors_added",
        "vectorsTotal": "vectors_total",
        "collectionsToReprocess": "collections_to_reprocess",
        "message": "message",
    }
    seed_response = {
        "status": "reconfigured",
        "previous_points_count": 1500,
        "vectors_added": ["fashionsiglip_v1_embedding"],
        "vectors_total": ["multilingual_e5_large_instruct_v1", "fashionsiglip_v1_embedding"],
        "collections_to_reprocess": ["col_xxx", "col_yyy"],
        "message": SEED_MESSAGE,
    }
    assert {seed: wire[ours] for ours, seed in seed_keys.items()} == seed_response


@pytest.mark.parametrize("capabilities", [SERVER, LOCAL], ids=["server", "local"])
def test_report_of_the_seed_change_under_auto_keeps_the_points(
    capabilities: Capabilities,
) -> None:
    spec = ns_spec(SEED_SPEC)
    desired = resolve_desired(spec, SEED_PLUGINS)
    observed = observed_of(TEXT, points=1500)
    plan = plan_of(desired, observed, AUTO, capabilities)

    result = report(plan, desired, observed, spec, time=TIME)

    assert steps(plan) == [(ADD, IMAGE_VECTOR)]
    assert result.status == "reconfigured"
    assert result.previous_points_count == 1500
    assert result.vectors_added == [IMAGE_VECTOR]
    assert result.vectors_total == [TEXT_VECTOR, IMAGE_VECTOR]
    assert result.collections_to_reprocess == ["col_yyy"]
    assert result.points_deleted == 0
    assert result.strategy is AUTO
    assert result.message == (
        "Qdrant collection changed in place: 1 new vector(s). No points were deleted. "
        "Re-trigger batches on the listed collections to fill the new vectors."
    )


def test_report_of_an_auto_change_on_an_old_server_deletes_every_point() -> None:
    spec = ns_spec(SEED_SPEC)
    desired = resolve_desired(spec, SEED_PLUGINS)
    observed = observed_of(TEXT, points=1500)
    plan = plan_of(desired, observed, AUTO, OLD_SERVER)

    result = report(plan, desired, observed, spec, time=TIME)

    assert result.points_deleted == 1500
    assert result.collections_to_reprocess == ["col_xxx", "col_yyy"]
    assert result.message == SEED_MESSAGE
    assert result.strategy is AUTO


@pytest.mark.parametrize("strategy", [AUTO, RECREATE], ids=["auto", "recreate"])
def test_report_of_an_empty_plan_is_no_changes_needed(strategy: Strategy) -> None:
    spec = ns_spec(SEED_SPEC, strategy=strategy.value)
    desired = resolve_desired(spec, SEED_PLUGINS)
    observed = observed_of(TEXT, IMAGE, points=1500)
    plan = plan_of(desired, observed, strategy)

    result = report(plan, desired, observed, spec, time=TIME)

    assert plan.empty
    assert result.status == "no_changes_needed"
    assert result.previous_points_count == 1500
    assert result.vectors_added == []
    assert result.vectors_total == [TEXT_VECTOR, IMAGE_VECTOR]
    assert result.collections_to_reprocess == []
    assert result.points_deleted == 0
    assert "No changes needed" in result.message


def test_report_of_a_new_collection() -> None:
    spec = ns_spec(SEED_SPEC)
    desired = resolve_desired(spec, SEED_PLUGINS)
    plan = plan_of(desired, None)

    result = report(plan, desired, None, spec, time=TIME)

    assert result.status == "reconfigured"
    assert result.previous_points_count == 0
    assert result.points_deleted == 0
    assert result.vectors_added == [TEXT_VECTOR, IMAGE_VECTOR]
    assert result.collections_to_reprocess == ["col_xxx", "col_yyy"]
    assert result.message.startswith("Qdrant collection created with 2 vector(s).")
    assert "points were deleted" not in result.message


def test_report_of_an_in_place_removal_reprocesses_nothing() -> None:
    spec = ns_spec(SEED_SPEC, plugins=[{"name": "text"}])
    desired = resolve_desired(spec, SEED_PLUGINS)
    observed = observed_of(TEXT, IMAGE, points=1500)
    plan = plan_of(desired, observed)

    result = report(plan, desired, observed, spec, time=TIME)

    assert result.vectors_added == []
    assert result.vectors_removed == [IMAGE_VECTOR]
    assert result.vectors_total == [TEXT_VECTOR]
    assert result.points_deleted == 0
    assert result.collections_to_reprocess == []
    assert result.message == (
        "Qdrant collection changed in place: 0 new vector(s). "
        f"Removed vector(s): {IMAGE_VECTOR}. No points were deleted; "
        "only the data of those vectors is gone."
    )


def test_report_of_an_in_place_replace_reprocesses_the_feeding_collections() -> None:
    spec = ns_spec(SEED_SPEC)
    desired = resolve_desired(spec, SEED_PLUGINS)
    observed = observed_of(TEXT, dense(IMAGE_VECTOR, 512), points=1500)
    plan = plan_of(desired, observed)

    result = report(plan, desired, observed, spec, time=TIME)

    assert steps(plan) == [(REPLACE, IMAGE_VECTOR)]
    assert result.vectors_added == []
    assert result.vectors_replaced == [IMAGE_VECTOR]
    assert result.points_deleted == 0
    assert result.collections_to_reprocess == ["col_yyy"]
    assert f"Re-created vector(s) with a new definition: {IMAGE_VECTOR}." in result.message


def test_report_of_a_recreate_lists_replaced_and_removed_vectors() -> None:
    spec = ns_spec(SEED_SPEC, strategy="Recreate")
    desired = resolve_desired(spec, SEED_PLUGINS)
    observed = observed_of(dense(TEXT_VECTOR, 512), sparse("old"), points=20)
    plan = plan_of(desired, observed, RECREATE)

    result = report(plan, desired, observed, spec, time=TIME)

    assert result.vectors_added == [IMAGE_VECTOR]
    assert result.vectors_removed == ["old"]
    assert result.vectors_replaced == [TEXT_VECTOR]
    assert result.points_deleted == 20
    assert result.collections_to_reprocess == ["col_xxx", "col_yyy"]
    assert "20 points were deleted." in result.message


def test_report_reprocesses_collections_of_every_plugin_bringing_a_merged_vector() -> None:
    spec = ns_spec(
        plugins=["a", "b", "c"],
        collections=[
            {"id": "fed-by-c", "plugins": ["c"]},
            {"id": "fed-by-b", "plugins": ["b"]},
            {"id": "fed-by-a-and-c", "plugins": ["a", "c"]},
            {"id": "fed-by-nobody", "plugins": []},
        ],
    )
    plugins = {"a": plugin(IMAGE), "b": plugin(IMAGE), "c": plugin(TEXT)}
    desired = resolve_desired(spec, plugins)
    observed = observed_of(TEXT, points=3)

    result = report(plan_of(desired, observed), desired, observed, spec, time=TIME)

    assert result.collections_to_reprocess == ["fed-by-b", "fed-by-a-and-c"]
