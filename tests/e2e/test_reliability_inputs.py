"""The bad-input table: every manifest in ``bad_inputs/`` is refused or stalls, and Qdrant
is never touched.

Each data file holds one case: ``manifest`` (the bad object), ``expect`` (``refused``: the
API server refuses it at apply, naming ``field``; ``stalled``: only the operator can tell,
so it must report ``Stalled`` with ``reason`` and name ``field`` in the message), and
optionally ``setup`` (objects applied first), ``target: base`` (an edit of a Namespace that
is Ready and holds points), ``generate``/``patch`` (large lists built at run time so the
files stay small) and ``command: create`` (objects too big for kubectl's client-side apply
annotation). ``condition: Reconciling`` marks an operator-side refusal that is retried
rather than Stalled (a missing Secret key may be added). ``expect: awaiting`` is a bad edit
whose plan is destructive: it waits for approval. ``expect: accepted`` is input issue 10
listed as suspect that is valid; its ``why`` says so. ``KNS`` and ``SUFFIX`` in a file are
this run's Kubernetes namespace and a unique suffix.

Qdrant untouched means: no collection appears for a bad object, and the base collection
keeps its vectors, points and ownership metadata, checked after each case and once more
at the end.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from qdrant_client import models as qm
from tests.e2e.operator_env import KubectlFn, apply, condition, namespace_doc, vns
from tests.e2e.reliability import report
from tests.seams import client_of

from vectorschema.qdrant.client import ClientGateway

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("operator")]

CASES_DIR = Path(__file__).resolve().parent / "bad_inputs"
SUFFIX = uuid.uuid4().hex[:6]
KNS = f"bad-inputs-{SUFFIX}"
BASE_SPEC: dict[str, Any] = {
    "plugins": [{"name": "text", "vectors": [{"name": "text_v1", "size": 4, "distance": "Cosine"}]}]
}
BASE_POINTS = 12


@dataclass(frozen=True)
class Case:
    stem: str
    data: dict[str, Any]

    @property
    def expect(self) -> str:
        return str(self.data["expect"])

    @property
    def target(self) -> str | None:
        return self.data.get("target")

    @property
    def name(self) -> str:
        if self.target:
            return self.target
        kind = self.data["manifest"]["kind"]
        return f"{self.stem}-{SUFFIX}" if kind == "Plugin" else self.stem

    def manifest(self) -> dict[str, Any]:
        doc = copy.deepcopy(self.data["manifest"])
        for gen in self.data.get("generate", []):
            fill = "x" * int(gen.get("fill", 0))
            items = _at(doc, gen["at"], create=True)
            items.extend(_format(gen["item"], i=i, fill=fill) for i in range(gen["count"]))
        for path, value in self.data.get("patch", {}).items():
            *parent, last = path.split(".")
            container = _at(doc, ".".join(parent))
            container[int(last) if isinstance(container, list) else last] = value
        doc.setdefault("metadata", {})["name"] = self.name
        if doc["kind"] != "Plugin":
            doc["metadata"]["namespace"] = KNS
        return doc


def _substitute(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("KNS", KNS).replace("SUFFIX", SUFFIX)
    if isinstance(value, list):
        return [_substitute(v) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v) for k, v in value.items()}
    return value


def _format(value: Any, **params: Any) -> Any:
    if isinstance(value, str):
        return value.format(**params)
    if isinstance(value, list):
        return [_format(v, **params) for v in value]
    if isinstance(value, dict):
        return {k: _format(v, **params) for k, v in value.items()}
    return value


def _at(doc: Any, path: str, create: bool = False) -> Any:
    node = doc
    parts = path.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, list):
            node = node[int(part)]
        elif create and part not in node:
            node[part] = [] if i == len(parts) - 1 else {}
            node = node[part]
        else:
            node = node[part]
    return node


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        data = _substitute(yaml.safe_load(path.read_text()))
        assert data["expect"] in ("refused", "stalled", "accepted", "awaiting"), path
        cases.append(Case(path.stem, data))
    return cases


CASES = load_cases()
REFUSED = [c for c in CASES if c.expect == "refused" and not c.target]
STALLED = [c for c in CASES if c.expect == "stalled" and not c.target]
EDITS = [c for c in CASES if c.target]
#: Listed in issue 10 as suspect, but valid input (each file says why).
ACCEPTED = [c for c in CASES if c.expect == "accepted"]


def collection_of(case: Case) -> str:
    spec = case.data["manifest"].get("spec") or {}
    return str(spec.get("collectionName") or f"{KNS}_{case.name}")


@dataclass
class Base:
    """The Ready Namespace with points that edit cases change, and its collection."""

    collection: str
    names: list[str]
    points: int
    metadata: dict[str, Any]

    def assert_untouched(self, qdrant: ClientGateway) -> None:
        live = qdrant.observe(self.collection)
        assert live is not None, f"{self.collection} was dropped"
        assert (sorted(live.names), live.points_count, dict(live.metadata)) == (
            self.names,
            self.points,
            self.metadata,
        ), f"{self.collection} changed"


@pytest.fixture(scope="module")
def base(kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway) -> Iterator[Base]:
    kubectl("create", "namespace", KNS)
    try:
        apply(kubectl, namespace_doc(KNS, "base", **BASE_SPEC))
        wait_for(lambda: is_ready(vns(kubectl, KNS, "base")), 60, "base Ready")
        collection = f"{KNS}_base"
        with client_of(qdrant) as client:
            client.upsert(
                collection,
                points=[
                    qm.PointStruct(id=i, vector={"text_v1": [0.5] * 4}) for i in range(BASE_POINTS)
                ],
            )
        live = qdrant.observe(collection)
        assert live is not None and live.points_count == BASE_POINTS
        yield Base(collection, sorted(live.names), live.points_count, dict(live.metadata))
    finally:
        kubectl("delete", "namespace", KNS, "--wait=false", "--ignore-not-found", check=False)
        kubectl(
            "delete",
            "plugins.vectorschema.dev",
            *(c.name for c in CASES if "Plugin" in c.data["manifest"]["kind"]),
            "--ignore-not-found",
            check=False,
        )


def is_ready(obj: dict[str, Any]) -> bool:
    ready = condition(obj, "Ready")
    return (
        ready.get("status") == "True"
        and obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
    )


def submit(kubectl: KubectlFn, case: Case) -> Any:
    verb = case.data.get("command", "apply")
    docs = [*(_with_namespace(d) for d in case.data.get("setup", [])), case.manifest()]
    if verb == "create":
        return kubectl("create", "-f", "-", input=json.dumps(docs[-1]), check=False)
    return kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs), check=False)


def _with_namespace(doc: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = KNS
    return doc


def assert_refused(case: Case, result: Any) -> None:
    assert result.returncode != 0, f"{case.stem}: accepted:\n{result.stdout}"
    err = result.stderr
    for text in (case.data.get("field"), case.data.get("message")):
        if text:
            assert text in err, f"{case.stem}: {text!r} not in:\n{err[:2000]}"


def stalled_with(kubectl: KubectlFn, name: str, reason: str, type_: str = "Stalled") -> Any:
    """The object once condition ``type_`` is True with ``reason`` at its generation."""

    def check() -> dict[str, Any] | None:
        obj = vns(kubectl, KNS, name)
        cond = condition(obj, type_)
        current = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        return (
            obj
            if current and (cond.get("status"), cond.get("reason")) == ("True", reason)
            else None
        )

    return check


def awaiting(kubectl: KubectlFn, name: str) -> Any:
    def check() -> dict[str, Any] | None:
        obj = vns(kubectl, KNS, name)
        ready = condition(obj, "Ready")
        current = obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if current and ready.get("reason") == "AwaitingConfirmation" else None

    return check


# --- refused at apply -------------------------------------------------------------------


@pytest.mark.parametrize("case", REFUSED, ids=[c.stem for c in REFUSED])
def test_refused_at_apply_naming_the_field(
    case: Case, base: Base, kubectl: KubectlFn, qdrant: ClientGateway
) -> None:
    assert_refused(case, submit(kubectl, case))
    kind = "plugins.vectorschema.dev" if case.data["manifest"]["kind"] == "Plugin" else "vns"
    got = kubectl("get", kind, "-n", KNS, case.name, check=False)
    assert got.returncode != 0 and "NotFound" in got.stderr
    assert qdrant.observe(collection_of(case)) is None
    base.assert_untouched(qdrant)


# --- only the operator can tell ---------------------------------------------------------


@pytest.fixture(scope="module")
def stalled_submitted(base: Base, kubectl: KubectlFn) -> None:
    """All stalled cases at once (they are independent): one wait instead of many."""
    for case in STALLED:
        result = submit(kubectl, case)
        assert result.returncode == 0, f"{case.stem}: refused:\n{result.stderr}"


@pytest.mark.parametrize("case", STALLED, ids=[c.stem for c in STALLED])
def test_stalled_with_a_reason_naming_the_field(
    case: Case,
    base: Base,
    stalled_submitted: None,
    kubectl: KubectlFn,
    wait_for: Any,
    qdrant: ClientGateway,
) -> None:
    reason, type_ = case.data["reason"], case.data.get("condition", "Stalled")
    obj = wait_for(stalled_with(kubectl, case.name, reason, type_), 60, f"{case.stem}: {reason}")
    assert condition(obj, "Ready").get("status") == "False"
    other = "Reconciling" if type_ == "Stalled" else "Stalled"
    assert condition(obj, other).get("status") != "True"
    if case.data.get("field"):
        assert case.data["field"] in condition(obj, type_)["message"]
    if collection_of(case) != base.collection:
        assert qdrant.observe(collection_of(case)) is None
    base.assert_untouched(qdrant)


# --- edits of a Ready Namespace that holds points ---------------------------------------


@pytest.mark.parametrize("case", EDITS, ids=[c.stem for c in EDITS])
def test_bad_edit_leaves_the_collection_alone(
    case: Case, base: Base, kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway
) -> None:
    generation = vns(kubectl, KNS, "base")["metadata"]["generation"]
    result = submit(kubectl, case)
    if case.expect == "refused":
        assert_refused(case, result)
        assert vns(kubectl, KNS, "base")["metadata"]["generation"] == generation
    elif case.expect == "awaiting":  # a destructive plan: it waits for a person
        assert result.returncode == 0, result.stderr
        obj = wait_for(awaiting(kubectl, "base"), 60, case.stem)
        plan = obj["status"]["plan"]
        assert plan["destructive"] and plan["pointsAtRisk"] == BASE_POINTS
    else:
        assert result.returncode == 0, result.stderr
        obj = wait_for(stalled_with(kubectl, "base", case.data["reason"]), 60, case.stem)
        assert case.data["field"] in condition(obj, "Stalled")["message"]
    base.assert_untouched(qdrant)
    apply(kubectl, namespace_doc(KNS, "base", **BASE_SPEC))
    wait_for(lambda: is_ready(vns(kubectl, KNS, "base")), 60, "base Ready again")
    base.assert_untouched(qdrant)


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.stem for c in ACCEPTED])
def test_accepted_suspect_input_creates_only_what_is_listed(
    case: Case, base: Base, kubectl: KubectlFn, wait_for: Any, qdrant: ClientGateway
) -> None:
    result = submit(kubectl, case)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: is_ready(vns(kubectl, KNS, case.name)), 60, f"{case.stem} Ready")
    live = qdrant.observe(collection_of(case))
    assert live is not None and sorted(live.names) == case.data["vectors"]
    kubectl("delete", "vns", "-n", KNS, case.name, "--timeout=60s")
    assert qdrant.observe(collection_of(case)) is None
    base.assert_untouched(qdrant)


def test_the_table_is_large_enough_and_qdrant_holds_only_the_base(
    base: Base, qdrant: ClientGateway
) -> None:
    """Runs last in this module: no bad object left anything behind in Qdrant."""
    assert len(CASES) - len(ACCEPTED) >= 40
    report(
        f"bad inputs: {len(REFUSED)} refused at apply, {len(STALLED)} stalled, "
        f"{len(EDITS)} bad edits of a collection with points; "
        f"{len(ACCEPTED)} suspect but valid; Qdrant untouched by all"
    )
    with client_of(qdrant) as client:
        names = {c.name for c in client.get_collections().collections}
    assert sorted(n for n in names if n.startswith(KNS)) == [base.collection]
    base.assert_untouched(qdrant)
