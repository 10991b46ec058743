"""`vectorschema plan` and `vectorschema reconfigure` without a cluster.

`plan` runs in-process (`cli.main([...])`, output read with capsys) against a real
qdrant-client local-mode store on disk under tmp_path (`--qdrant-path`), or against no
Qdrant at all. The store is seeded through the same shared gateway the CLI gets from
`connect(path=...)` (a local store is locked per process). One test runs the installed
console script as a subprocess, after closing the store, to prove the entry point works.

Exit codes, as a CI pipeline reads them: 0 nothing to do or non-destructive, 2 destructive
(needs confirmation), 1 invalid input (the message names the field).
"""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import dense, sparse, wire
from qdrant_client import models as qm
from tests.seams import client_of, forget

from vectorschema import cli
from vectorschema.api import (
    CONFIRM_ANNOTATION,
    OWNER_METADATA_KEY,
    VERSION,
    ActionKind,
    NamespaceResource,
    PluginSpec,
    Strategy,
    VectorSpec,
)
from vectorschema.controller.reconcile import reconcile
from vectorschema.core.planning import fingerprint, resolve_desired
from vectorschema.core.schema import CollectionSettings, vector_def_from_spec
from vectorschema.k8s import kube
from vectorschema.qdrant.client import ClientGateway

API = f"vectorschema.dev/{VERSION}"
NAME, KUBE_NS = "tenant", "team-a"
OWNER = f"{KUBE_NS}/{NAME}"
COLLECTION = f"{KUBE_NS}_{NAME}"  # the default collection name of team-a/tenant
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"

# Small vectors, so seeding points is quick.
T = dense("text_v", 4)
I = dense("image_v", 3)  # noqa: E741
S = sparse("sparse_v", modifier="idf")
PLUGIN_VECTORS: dict[str, list[VectorSpec]] = {"text": [T], "image": [I], "sparse": [S]}
PLAN_KEYS = {"fingerprint", "destructive", "actions", "pointsAtRisk", "needsConfirmation"}


# --- manifests ------------------------------------------------------------------------


def plugin_doc(name: str, vectors: Sequence[VectorSpec] | None = None) -> dict[str, Any]:
    vectors = PLUGIN_VECTORS[name] if vectors is None else vectors
    return {
        "apiVersion": API,
        "kind": "Plugin",
        "metadata": {"name": name},
        "spec": {"vectors": [wire(v) for v in vectors]},
    }


def namespace_doc(
    plugins: Sequence[str | Mapping[str, Any]] = ("text",),
    *,
    name: str = NAME,
    kube_namespace: str | None = KUBE_NS,
    **spec: Any,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if kube_namespace is not None:
        metadata["namespace"] = kube_namespace
    refs = [{"name": p} if isinstance(p, str) else dict(p) for p in plugins]
    return {
        "apiVersion": API,
        "kind": "Namespace",
        "metadata": metadata,
        "spec": {"plugins": refs, **spec},
    }


def all_plugins() -> list[dict[str, Any]]:
    return [plugin_doc(n) for n in PLUGIN_VECTORS]


def manifest(tmp_path: Path, *docs: Mapping[str, Any], name: str = "manifests.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all([dict(d) for d in docs], sort_keys=False))
    return str(path)


# --- running the CLI ------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def plan_json(
    capsys: pytest.CaptureFixture[str], file: str, store: ClientGateway | None = None
) -> tuple[int, Any]:
    where = ["--qdrant-path", store.location] if store is not None else []
    code, out, err = run(capsys, "plan", "-f", file, *where, "--output", "json")
    assert code in (0, 2), err
    return code, json.loads(out)


# --- seeding the store ----------------------------------------------------------------


def seed(
    store: ClientGateway,
    *vectors: VectorSpec,
    owner: str | None = OWNER,
    collection: str = COLLECTION,
) -> None:
    """A collection holding `vectors`, stamped as the operator stamps the ones it owns."""
    store.create_collection(
        collection,
        [vector_def_from_spec(v) for v in vectors],
        CollectionSettings(),
        {OWNER_METADATA_KEY: owner} if owner else {},
    )


def seed_points(store: ClientGateway, ids: range, vectors: Mapping[str, Any]) -> None:
    with client_of(store) as client:
        client.upsert(
            COLLECTION,
            [qm.PointStruct(id=i, vector=dict(vectors), payload={"n": i}) for i in ids],
        )


TEXT_POINT = {"text_v": [0.1, 0.2, 0.3, 0.4]}
BOTH_POINT = {**TEXT_POINT, "image_v": [0.5, 0.6, 0.7]}


# --- exit 0 -------------------------------------------------------------------------


def test_without_qdrant_plans_a_new_collection_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("QDRANT_URL", raising=False)
    file = manifest(tmp_path, *all_plugins(), namespace_doc(["text", "image"]))
    code, out, err = run(capsys, "plan", "-f", file)
    assert (code, err) == (0, "")
    assert f"Namespace {OWNER} -> collection {COLLECTION}" in out
    assert "(non-destructive)" in out
    assert "createCollection: create collection with 2 vector(s): text_v, image_v" in out
    assert "no Qdrant given" in out


def test_empty_store_plans_create_collection_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    file = manifest(tmp_path, *all_plugins(), namespace_doc(["text", "sparse"]))
    code, plan = plan_json(capsys, file, qdrant)
    assert code == 0
    assert [a["action"] for a in plan["actions"]] == [ActionKind.CREATE_COLLECTION.value]
    assert (plan["destructive"], plan["needsConfirmation"], plan["pointsAtRisk"]) == (
        False,
        False,
        0,
    )
    assert qdrant.observe(COLLECTION) is None  # planning is read-only


def test_matching_collection_has_no_changes_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, T, I)
    seed_points(qdrant, range(3), BOTH_POINT)
    # plugin order and the merge of an identical vector from two plugins change nothing
    twin = {"name": "text-twin", "vectors": [wire(T)]}
    file = manifest(tmp_path, *all_plugins(), namespace_doc(["image", "text", twin]))

    code, out, err = run(capsys, "plan", "-f", file, "--qdrant-path", qdrant.location)
    assert (code, err) == (0, "")
    assert "no changes (fingerprint " in out

    code, plan = plan_json(capsys, file, qdrant)
    assert code == 0
    assert plan["changes"] is False
    assert plan["actions"] == []
    assert (plan["destructive"], plan["needsConfirmation"], plan["pointsAtRisk"]) == (
        False,
        False,
        0,
    )


def test_adding_a_vector_is_non_destructive_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, T)
    seed_points(qdrant, range(5), TEXT_POINT)
    file = manifest(tmp_path, *all_plugins(), namespace_doc(["text", "image", "sparse"]))

    code, out, _ = run(capsys, "plan", "-f", file, "--qdrant-path", qdrant.location)
    assert code == 0
    assert "(non-destructive)" in out
    assert "addVector image_v: dense 3, Cosine, float32" in out
    assert "[destroys data]" not in out

    code, plan = plan_json(capsys, file, qdrant)
    assert code == 0
    assert [(a["action"], a["vector"], a["destructive"]) for a in plan["actions"]] == [
        ("addVector", "image_v", False),
        ("addVector", "sparse_v", False),
    ]
    assert (plan["destructive"], plan["needsConfirmation"], plan["pointsAtRisk"]) == (
        False,
        False,
        0,
    )
    live = qdrant.observe(COLLECTION)
    assert live is not None and live.names == ["text_v"]  # planning is read-only


# --- exit 2 -------------------------------------------------------------------------


def test_removing_a_vector_is_destructive_and_exits_2_with_points_at_risk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, T, I)
    seed_points(qdrant, range(4), BOTH_POINT)
    seed_points(qdrant, range(4, 10), TEXT_POINT)  # these carry no image_v
    file = manifest(tmp_path, *all_plugins(), namespace_doc(["text"]))

    code, out, err = run(capsys, "plan", "-f", file, "--qdrant-path", qdrant.location)
    assert (code, err) == (2, "")
    assert "(DESTRUCTIVE)" in out
    assert "removeVector image_v [destroys data]" in out
    assert "points at risk: 4" in out
    assert "why: deletes the stored data of: image_v" in out

    code, plan = plan_json(capsys, file, qdrant)
    assert code == 2
    assert f"spec.confirmPlan: {plan['fingerprint']}" in out
    assert [(a["action"], a["vector"], a["destructive"]) for a in plan["actions"]] == [
        ("removeVector", "image_v", True)
    ]
    assert (plan["destructive"], plan["needsConfirmation"], plan["pointsAtRisk"]) == (
        True,
        True,
        4,
    )
    assert plan["vectorsAtRisk"] == ["image_v"]
    live = qdrant.observe(COLLECTION)
    assert live is not None and live.names == ["text_v", "image_v"] and live.points_count == 10


def test_changing_a_vector_size_replaces_it_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, T, I)
    seed_points(qdrant, range(3), BOTH_POINT)
    bigger = plugin_doc("image", [dense("image_v", 8)])
    file = manifest(tmp_path, plugin_doc("text"), bigger, namespace_doc(["text", "image"]))

    code, plan = plan_json(capsys, file, qdrant)
    assert code == 2
    (action,) = plan["actions"]
    assert (action["action"], action["vector"], action["destructive"]) == (
        "replaceVector",
        "image_v",
        True,
    )
    assert action["detail"] == "dense 3, Cosine, float32 -> dense 8, Cosine, float32"
    assert (plan["destructive"], plan["needsConfirmation"], plan["pointsAtRisk"]) == (
        True,
        True,
        3,
    )


@pytest.mark.parametrize(
    ("plugins", "change"),
    [
        (["text", "image"], "add image_v"),
        (["image"], "remove text_v"),
    ],
)
def test_any_change_under_recreate_is_destructive_and_exits_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    qdrant: ClientGateway,
    plugins: list[str],
    change: str,
) -> None:
    seed(qdrant, T, *([I] if "remove" in change else []))
    seed_points(qdrant, range(7), BOTH_POINT if "remove" in change else TEXT_POINT)
    file = manifest(tmp_path, *all_plugins(), namespace_doc(plugins, strategy="Recreate"))

    code, plan = plan_json(capsys, file, qdrant)
    assert code == 2
    (action,) = plan["actions"]
    assert action["action"] == "recreateCollection"
    assert change in action["detail"]
    assert (plan["destructive"], plan["needsConfirmation"], plan["pointsAtRisk"]) == (
        True,
        True,
        7,  # a recreate drops every point
    )
    assert "strategy is Recreate" in plan["reason"]


def test_recreate_strategy_creates_a_missing_collection_or_leaves_a_matching_one_with_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    file = manifest(tmp_path, *all_plugins(), namespace_doc(["text"], strategy="Recreate"))
    code, plan = plan_json(capsys, file, qdrant)
    assert (code, [a["action"] for a in plan["actions"]]) == (0, ["createCollection"])

    seed(qdrant, T)
    code, plan = plan_json(capsys, file, qdrant)
    assert (code, plan["actions"], plan["needsConfirmation"]) == (0, [], False)


# --- exit 1: invalid input, with the field named --------------------------------------


def bad_vector_namespace() -> dict[str, Any]:
    return namespace_doc([{"name": "inline", "vectors": [{"name": "v", "distance": "Cosine"}]}])


INVALID: dict[str, tuple[list[dict[str, Any]], list[str]]] = {
    "dense vector without size": (
        [bad_vector_namespace()],
        ["document 1 (Namespace tenant)", "spec.plugins[0].vectors[0]", "size is required"],
    ),
    "unknown field": (
        [namespace_doc([{"name": "inline", "vectors": [{**wire(T), "sise": 4}]}])],
        ["spec.plugins[0].vectors[0].sise", "Extra inputs are not permitted"],
    ),
    "sparse vector with a size": (
        [namespace_doc([{"name": "inline", "vectors": [{**wire(S), "size": 4}]}])],
        ["spec.plugins[0].vectors[0]", "size is not allowed for sparse vectors"],
    ),
    "invalid Plugin": (
        [plugin_doc("text", []), namespace_doc(["text"])],
        ["document 1 (Plugin text)", "spec.vectors", "at least 1 item"],
    ),
    "bad strategy": (
        [namespace_doc(["text"], strategy="Sometimes"), plugin_doc("text")],
        ["spec.strategy", "'Auto' or 'Recreate'"],
    ),
    "bad confirmPlan": (
        [namespace_doc(["text"], confirmPlan="yes"), plugin_doc("text")],
        ["spec.confirmPlan", "should match pattern"],
    ),
    "duplicate plugin": (
        [namespace_doc(["text", "text"]), plugin_doc("text")],
        ["plugins[1].name: duplicate value 'text'"],
    ),
    "no metadata": (
        [{"apiVersion": API, "kind": "Namespace", "metadata": None, "spec": {}}],
        ["document 1 (Namespace ?)", "metadata"],
    ),
    "a name no collection can have": (
        [namespace_doc(["text"], name="a/b"), plugin_doc("text")],
        ["metadata.name", "team-a_a/b", "spec.collectionName"],
    ),
    "referenced Plugin missing from the file": (
        [plugin_doc("text"), namespace_doc(["text", "image", "sparse"])],
        [f"Namespace {OWNER}", "plugin(s) not found: image, sparse"],
    ),
    "plugin conflict": (
        [
            plugin_doc("text"),
            plugin_doc("image", [dense("text_v", 8)]),
            namespace_doc(["text", "image"]),
        ],
        [
            f"Namespace {OWNER}",
            "vector 'text_v' is defined differently by plugin 'text' (dense 4, Cosine, "
            "float32) and plugin 'image' (dense 8, Cosine, float32)",
        ],
    ),
    "no vectorschema Namespace": (
        [plugin_doc("text"), {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}],
        ["no vectorschema.dev/v1alpha1 Namespace found"],
    ),
}


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_invalid_input_exits_1_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    docs, expected = INVALID[case]
    file = manifest(tmp_path, *docs)
    code, out, err = run(capsys, "plan", "-f", file, "-o", "json")
    assert (code, out) == (1, "")
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in expected:
        assert fragment in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"apiVersion: [unclosed\n", "not valid YAML"),
        (b"kind: Namespace\n\tspec: {}\n", "not valid YAML"),
        (b"", "no vectorschema.dev/v1alpha1 Namespace found"),
        (b"just a string\n---\n- a list\n", "no vectorschema.dev/v1alpha1 Namespace found"),
        (b"\xff\xfe\x00garbage", "not UTF-8 text"),
    ],
    ids=["unclosed", "tab", "empty", "not-manifests", "binary"],
)
def test_unreadable_files_exit_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    code, out, err = run(capsys, "plan", "-f", str(path))
    assert (code, out) == (1, "")
    assert err.startswith(f"error: {path}: ") and expected in err
    assert err.count("\n") == 1 or expected == "not valid YAML"  # YAML errors show where


def test_missing_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", "-f", str(tmp_path / "nope.yaml"))
    assert (code, out) == (1, "")
    assert "No such file" in err and "nope.yaml" in err


def test_invalid_qdrant_url_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = manifest(tmp_path, *all_plugins(), namespace_doc())
    code, out, err = run(capsys, "plan", "-f", file, "--qdrant-url", "http://[::1")
    assert (code, out) == (1, "")
    assert err == "error: invalid Qdrant url '<invalid url>'\n"


def test_unreachable_qdrant_exits_1_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    file = manifest(tmp_path, *all_plugins(), namespace_doc())
    code, out, err = run(capsys, "plan", "-f", file)
    assert (code, out) == (1, "")
    assert err.startswith("error: Qdrant at http://127.0.0.1:9 ") and err.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [
        ["plan", "-f", "x.yaml", "--outptu", "json"],
        ["plan", "-f", "x.yaml", "--qdrant-path", "q", "--qdrant-url", "http://q:6333"],
        ["plan", "-f", "x.yaml", "-o", "yaml"],
        ["plan"],
        [],
    ],
    ids=["unknown-flag", "both-qdrants", "bad-output", "no-file", "no-command"],
)
def test_usage_errors_exit_1_not_2(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    """argparse's own exit code, 2, would read as "destructive plan" in a CI job."""
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 1
    out, err = capsys.readouterr()
    assert out == "" and "usage: vectorschema" in err and "error:" in err


# --- ownership: what the operator would refuse, the CLI refuses -----------------------


def test_collection_owned_by_another_resource_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, T, owner="team-b/other")
    file = manifest(tmp_path, *all_plugins(), namespace_doc(["text", "image"]))
    code, out, err = run(capsys, "plan", "-f", file, "--qdrant-path", qdrant.location)
    assert (code, out) == (1, "")
    assert "spec.collectionName" in err and "owned by 'team-b/other'" in err


def test_unowned_collection_needs_adopt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, T, owner=None)
    file = manifest(tmp_path, *all_plugins(), namespace_doc(["text", "image"]))
    code, out, err = run(capsys, "plan", "-f", file, "--qdrant-path", qdrant.location)
    assert (code, out) == (1, "")
    assert "spec.adopt" in err and "no resource owns it" in err

    adopting = manifest(tmp_path, *all_plugins(), namespace_doc(["text", "image"], adopt=True))
    code, plan = plan_json(capsys, adopting, qdrant)
    assert (code, [a["action"] for a in plan["actions"]]) == (0, ["addVector"])


# --- JSON and the fingerprint ---------------------------------------------------------


def test_json_output_has_the_plan_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, T, I)
    file = manifest(tmp_path, *all_plugins(), namespace_doc(["text", "sparse"]))
    code, out, _ = run(capsys, "plan", "-f", file, "--qdrant-path", qdrant.location, "-o", "json")
    plan = json.loads(out)  # the whole of stdout is one JSON document
    assert code == 2
    assert isinstance(plan, dict) and plan.keys() >= PLAN_KEYS
    assert (plan["namespace"], plan["name"], plan["collection"]) == (KUBE_NS, NAME, COLLECTION)
    assert isinstance(plan["fingerprint"], str) and len(plan["fingerprint"]) == 16
    assert int(plan["fingerprint"], 16) >= 0
    assert {(a["action"], a["vector"]) for a in plan["actions"]} == {
        ("removeVector", "image_v"),
        ("addVector", "sparse_v"),
    }
    assert all({"action", "destructive", "detail"} <= a.keys() for a in plan["actions"])
    assert isinstance(plan["pointsAtRisk"], int)


def test_fingerprint_is_the_operators_and_stable_across_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, T, I)
    seed_points(qdrant, range(3), BOTH_POINT)
    docs = [*all_plugins(), namespace_doc(["text"])]
    file = manifest(tmp_path, *docs)

    _, first = plan_json(capsys, file, qdrant)
    _, second = plan_json(capsys, file, qdrant)
    assert first["fingerprint"] == second["fingerprint"]

    # planning.fingerprint with the operator's inputs
    resource = NamespaceResource.model_validate(docs[-1])
    plugins = {d["metadata"]["name"]: PluginSpec.model_validate(d["spec"]) for d in docs[:-1]}
    expected = fingerprint(
        COLLECTION,
        resolve_desired(resource.spec, plugins),
        qdrant.observe(COLLECTION),
        Strategy.AUTO,
        qdrant.capabilities(),
    )
    assert first["fingerprint"] == expected

    # the operator itself: the same plan awaits confirmation under the same fingerprint...
    waiting = reconcile(resource, plugins, lambda: qdrant, now=NOW, write_intent=lambda s: None)
    assert waiting.status.plan is not None
    assert waiting.status.plan.fingerprint == first["fingerprint"]
    assert waiting.status.plan.points_at_risk == first["pointsAtRisk"] == 3

    # ...and pinning the printed fingerprint approves exactly that plan
    pinned = NamespaceResource.model_validate(
        {**docs[-1], "spec": {**docs[-1]["spec"], "confirmPlan": first["fingerprint"]}}
    )
    applied = reconcile(pinned, plugins, lambda: qdrant, now=NOW, write_intent=lambda s: None)
    assert applied.status.plan is None and applied.status.vectors == ["text_v"]
    code, after = plan_json(capsys, file, qdrant)
    assert (code, after["changes"]) == (0, False)


def test_fingerprint_changes_with_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, T, I)
    only_text = manifest(tmp_path, *all_plugins(), namespace_doc(["text"]), name="a.yaml")
    only_image = manifest(tmp_path, *all_plugins(), namespace_doc(["image"]), name="b.yaml")
    recreate = manifest(
        tmp_path, *all_plugins(), namespace_doc(["text"], strategy="Recreate"), name="c.yaml"
    )
    prints = {plan_json(capsys, f, qdrant)[1]["fingerprint"] for f in (only_text, only_image)}
    prints.add(plan_json(capsys, recreate, qdrant)[1]["fingerprint"])
    assert len(prints) == 3


# --- several Namespaces, stdin, the samples -------------------------------------------


def test_several_namespaces_in_one_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, T, I)  # team-a/tenant will lose image_v
    file = manifest(
        tmp_path,
        namespace_doc(["text"]),
        *all_plugins(),
        namespace_doc(["text", "image"], name="fresh", kube_namespace="team-b"),
        namespace_doc(["sparse"], name="bare", kube_namespace=None),  # default namespace
    )
    code, out, err = run(capsys, "plan", "-f", file, "--qdrant-path", qdrant.location)
    assert (code, err) == (2, "")  # one destructive plan is enough
    assert f"Namespace {OWNER} -> collection {COLLECTION}" in out
    assert "Namespace team-b/fresh -> collection team-b_fresh" in out
    assert "Namespace default/bare -> collection default_bare" in out

    code, out, _ = run(capsys, "plan", "-f", file, "--qdrant-path", qdrant.location, "-o", "json")
    plans = json.loads(out)
    assert code == 2 and isinstance(plans, list)
    assert [(p["namespace"], p["name"], p["needsConfirmation"]) for p in plans] == [
        (KUBE_NS, NAME, True),
        ("team-b", "fresh", False),
        ("default", "bare", False),
    ]
    assert all(p.keys() >= PLAN_KEYS for p in plans)
    assert len({p["fingerprint"] for p in plans}) == 3


def test_several_non_destructive_namespaces_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, T)
    file = manifest(
        tmp_path,
        *all_plugins(),
        namespace_doc(["text", "image"]),
        namespace_doc(["text"], name="other"),
    )
    code, plans = plan_json(capsys, file, qdrant)
    assert code == 0
    assert [[a["action"] for a in p["actions"]] for p in plans] == [
        ["addVector"],
        ["createCollection"],
    ]


def test_manifests_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, qdrant: ClientGateway
) -> None:
    seed(qdrant, T)
    text = yaml.safe_dump_all([*all_plugins(), namespace_doc(["text", "image"])])
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, out, err = run(capsys, "plan", "-f", "-", "--qdrant-path", qdrant.location, "-o", "json")
    assert (code, err) == (0, "")
    assert [a["action"] for a in json.loads(out)["actions"]] == ["addVector"]


def test_bad_yaml_on_stdin_names_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("spec: [\n"))
    code, out, err = run(capsys, "plan", "-f", "-")
    assert (code, out) == (1, "")
    assert err.startswith("error: -: not valid YAML")


def test_the_sample_manifests_directory_plans_cleanly(
    capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    """`-f manifests/samples/`, as the docs show it: every .yaml file of the directory,
    the core v1 Namespace among them skipped."""
    code, plan = plan_json(capsys, str(SAMPLES), qdrant)
    assert code == 0
    assert plan["collection"] == "tenant-acme_catalog"
    (action,) = plan["actions"]
    assert action["action"] == "createCollection"
    assert "3 vector(s)" in action["detail"]


def test_a_directory_of_manifests_and_recursion(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], qdrant: ClientGateway
) -> None:
    seed(qdrant, T, I)
    root = tmp_path / "gitops"
    (root / "plugins").mkdir(parents=True)
    manifest(root, namespace_doc(["text"]), name="namespace.yml")
    manifest(root / "plugins", *all_plugins(), name="plugins.yaml")
    (root / "README.md").write_text("# not a manifest\n")

    code, out, err = run(capsys, "plan", "-f", str(root), "--qdrant-path", qdrant.location)
    assert (code, out) == (1, "")
    assert "plugin(s) not found: text" in err  # the subdirectory was not read

    code, out, err = run(
        capsys, "plan", "-f", str(root), "-R", "--qdrant-path", qdrant.location, "-o", "json"
    )
    assert (code, err) == (2, "")
    assert [a["action"] for a in json.loads(out)["actions"]] == ["removeVector"]

    code, out, err = run(capsys, "plan", "-f", str(root / "plugins" / ".."), "-R")
    assert code == 0


def test_an_empty_directory_exits_1_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "sub").mkdir()
    code, out, err = run(capsys, "plan", "-f", str(tmp_path))
    assert (code, out) == (1, "")
    assert "no .yaml, .yml, .json files" in err and "-R" in err


def test_errors_name_the_file_and_the_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = yaml.safe_dump(plugin_doc("text"))
    bad = yaml.safe_dump(bad_vector_namespace())
    path = tmp_path / "two.yaml"
    path.write_text(f"{good}---\n---\n{bad}")  # an empty document in between counts
    code, _, err = run(capsys, "plan", "-f", str(path))
    assert code == 1
    assert err.startswith(f"error: {path}: document 3 (Namespace tenant): spec.plugins[0]")


# --- the console script ---------------------------------------------------------------


def test_console_script_plans_against_a_store_closed_by_this_process(
    tmp_path: Path, qdrant: ClientGateway
) -> None:
    seed(qdrant, T, I)
    seed_points(qdrant, range(2), BOTH_POINT)
    path = qdrant.location
    forget(path=path)  # release the store's lock for the child process
    file = manifest(tmp_path, *all_plugins(), namespace_doc(["text"]))
    script = Path(sys.executable).parent / "vectorschema"
    assert script.is_file(), "the console script is not installed: run `make install`"

    done = subprocess.run(
        [str(script), "plan", "-f", file, "--qdrant-path", path, "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "QDRANT_URL"},
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == ""  # the store is closed cleanly at exit, no noise on stderr
    plan = json.loads(done.stdout)
    assert plan["needsConfirmation"] is True and plan["pointsAtRisk"] == 2

    invalid = subprocess.run(
        [str(script), "plan", "-f", "-"],
        input="apiVersion: [\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert invalid.returncode == 1 and "not valid YAML" in invalid.stderr
    assert "Traceback" not in invalid.stderr


# --- reconfigure --------------------------------------------------------------------


def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """No kubeconfig, no in-cluster credentials; records any attempt to reach a cluster."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    calls: list[str] = []
    real_load = kube.load_config

    def load_config() -> None:
        calls.append("load_config")
        real_load()

    def forbidden(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"kube.{name} called")

        return call

    monkeypatch.setattr(kube, "load_config", load_config)
    monkeypatch.setattr(kube, "get_namespace", forbidden("get_namespace"))
    monkeypatch.setattr(kube, "set_annotation", forbidden("set_annotation"))
    return calls


def test_reconfigure_without_confirm_refuses_without_contacting_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = no_cluster(monkeypatch, tmp_path)
    code, out, err = run(capsys, "reconfigure", NAME, "-n", KUBE_NS)
    assert (code, out) == (1, "")
    assert "--confirm" in err and "nothing was changed" in err
    assert calls == []


def test_reconfigure_with_confirm_and_no_cluster_exits_1_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = no_cluster(monkeypatch, tmp_path)
    code, out, err = run(capsys, "reconfigure", NAME, "-n", KUBE_NS, "--confirm", "--timeout", "1")
    assert (code, out) == (1, "")
    assert err.startswith("error: cannot reach a Kubernetes cluster") and err.count("\n") == 1
    assert calls == ["load_config"]


def test_reconfigure_console_script_without_confirm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    env["KUBECONFIG"] = str(tmp_path / "no-such-kubeconfig")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "vectorschema"), "reconfigure", NAME],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert "--confirm" in done.stderr and "Traceback" not in done.stderr


def test_seed_keys_are_the_seed_endpoints() -> None:
    obj = {
        "metadata": {"namespace": KUBE_NS, "name": NAME},
        "status": {
            "pointsCount": 5,
            "vectors": ["text_v"],
            "lastReconfigure": {
                "status": "reconfigured",
                "previousPointsCount": 5,
                "vectorsAdded": ["image_v"],
                "vectorsTotal": ["text_v", "image_v"],
                "collectionsToReprocess": ["col_yyy"],
                "message": "done",
                "pointsDeleted": 0,
            },
        },
    }
    assert tuple(cli.seed_response(obj)) == cli.SEED_KEYS
    assert tuple(cli.no_changes(obj)) == cli.SEED_KEYS
    assert cli.seed_response(obj)["namespace_id"] == OWNER
    assert cli.no_changes(obj)["status"] == "no_changes_needed"


class FakeCluster:
    """One Namespace resource with a pending plan; the operator never acts on it."""

    def __init__(self, fingerprint: str) -> None:
        self.obj: dict[str, Any] = {
            "metadata": {
                "name": NAME,
                "namespace": KUBE_NS,
                "generation": 3,
                "resourceVersion": "10",
                "annotations": {},
            },
            "status": {
                "observedGeneration": 3,
                "plan": {"fingerprint": fingerprint, "actions": []},
            },
        }
        self.calls: list[tuple[str, str | None, str | None]] = []

    def get_namespace(self, namespace: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.obj)

    def set_annotation(
        self,
        namespace: str,
        name: str,
        key: str,
        value: str | None,
        resource_version: str | None = None,
    ) -> str:
        meta = self.obj["metadata"]
        if resource_version is not None and resource_version != meta["resourceVersion"]:
            raise kube.Conflict("changed")
        self.calls.append((key, value, resource_version))
        if value is None:
            meta["annotations"].pop(key, None)
        else:
            meta["annotations"][key] = value
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return str(meta["resourceVersion"])


def test_reconfigure_that_times_out_withdraws_its_approval(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CLI that gave up must not leave a live approval behind: the annotation would
    approve that plan whenever it comes back (a revert, an operator back from an outage),
    long after the user was told the reconfigure failed (issue 8, scenario 6)."""
    fp = "0123456789abcdef"
    cluster = FakeCluster(fp)
    monkeypatch.setattr(kube, "load_config", lambda: None)
    monkeypatch.setattr(kube, "get_namespace", cluster.get_namespace)
    monkeypatch.setattr(kube, "set_annotation", cluster.set_annotation)
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)

    code, out, err = run(
        capsys, "reconfigure", NAME, "-n", KUBE_NS, "--confirm", "--timeout", "0.2"
    )

    assert (code, out) == (1, "")
    assert cluster.calls[0] == (CONFIRM_ANNOTATION, fp, None)
    assert cluster.calls[-1] == (CONFIRM_ANNOTATION, None, "11")  # guarded by its version
    assert CONFIRM_ANNOTATION not in cluster.obj["metadata"]["annotations"]
    assert "withdrawn" in err and "stays set" not in err


class AppliesWithBackfill(FakeCluster):
    """The operator applies the plan once approved; its backfill Job runs for two reads,
    then ends as `outcome`."""

    def __init__(self, fingerprint: str, outcome: str) -> None:
        super().__init__(fingerprint)
        self.fp, self.outcome, self.reads = fingerprint, outcome, 0

    def get_namespace(self, namespace: str, name: str) -> dict[str, Any]:
        obj = super().get_namespace(namespace, name)
        if CONFIRM_ANNOTATION not in obj["metadata"]["annotations"]:
            return obj
        self.reads += 1
        state = "Running" if self.reads < 3 else self.outcome
        obj["status"] = {
            "observedGeneration": 3,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Reconciled"}],
            "lastReconfigure": {
                "status": "reconfigured",
                "planFingerprint": self.fp,
                "vectorsAdded": ["image"],
                "collectionsToReprocess": ["docs"],
            },
            "reprocess": [
                {
                    "collection": "docs",
                    "plugin": "image",
                    "job": "search-image-1",
                    "state": state,
                    "attempts": 1,
                    "planFingerprint": self.fp,
                    "message": "boom" if state == "Failed" else "",
                },
                {"collection": "docs", "plugin": "old", "state": "Running", "planFingerprint": "x"},
            ],
        }
        return obj


@pytest.mark.parametrize(("outcome", "code"), [("Succeeded", 0), ("Failed", 3)])
def test_reconfigure_wait_waits_for_the_plans_backfill_jobs(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    outcome: str,
    code: int,
) -> None:
    fp = "0123456789abcdef"
    cluster = AppliesWithBackfill(fp, outcome)
    monkeypatch.setattr(kube, "load_config", lambda: None)
    monkeypatch.setattr(kube, "get_namespace", cluster.get_namespace)
    monkeypatch.setattr(kube, "set_annotation", cluster.set_annotation)
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)

    got, out, err = run(capsys, "reconfigure", NAME, "-n", KUBE_NS, "--confirm", "--wait")

    assert got == code, err
    response = json.loads(out)
    assert response["collections_to_reprocess"] == ["docs"]
    assert response["reprocess"] == [
        {
            "collection": "docs",
            "plugin": "image",
            "job": "search-image-1",
            "state": outcome,
            "attempts": 1,
            "message": "boom" if outcome == "Failed" else "",
        }
    ], "only this plan's Jobs, once they ended"
    assert cluster.reads >= 3


def test_reconfigure_without_wait_does_not_wait_for_backfill(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = AppliesWithBackfill("0123456789abcdef", "Succeeded")
    monkeypatch.setattr(kube, "load_config", lambda: None)
    monkeypatch.setattr(kube, "get_namespace", cluster.get_namespace)
    monkeypatch.setattr(kube, "set_annotation", cluster.set_annotation)
    monkeypatch.setattr(cli.time, "sleep", lambda s: None)
    got, out, _ = run(capsys, "reconfigure", NAME, "-n", KUBE_NS, "--confirm")
    assert got == 0 and "reprocess" not in json.loads(out) and cluster.reads == 1
