"""The generated CRDs, as a real kube-apiserver enforces and shows them.

Unit tests prove the YAML is what the models generate; only the API server proves that it
accepts the schema (structural, CEL within the cost budget), refuses bad objects with a
message naming the field, fills the defaults, and serves `kubectl explain`, the short
name, the category and the printer columns. Every invalid object is also checked against
the models, so the CLI (pydantic) and the API server (schema + CEL) refuse the same things.

No operator runs here. The CRDs stay installed afterwards (other modules of the session
may use them; `kubectl apply` is idempotent); this module's Kubernetes namespace and its
cluster-scoped Plugins are deleted.

Note: `kubectl explain namespaces.vectorschema.dev.spec.plugins` does not select our kind
(kubectl explain takes the first dotted segment as the resource and picks core v1
Namespace); `kubectl explain vns.spec.plugins` and
`kubectl explain namespaces.spec.plugins --api-version=vectorschema.dev/v1alpha1` do.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from vectorschema import api

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
CRD_NAMES = ("namespaces.vectorschema.dev", "plugins.vectorschema.dev")
SUFFIX = uuid.uuid4().hex[:6]
TEST_LABEL = "vectorschema.dev/e2e"

Kubectl = Callable[..., Any]
WaitFor = Callable[..., Any]
Manifest = dict[str, Any]


def plugin(name: str, vectors: list[dict[str, Any]]) -> Manifest:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "Plugin",
        "metadata": {"name": name, "labels": {TEST_LABEL: "crd-validation"}},
        "spec": {"vectors": vectors},
    }


def vns(name: str, kube_ns: str, **spec: Any) -> Manifest:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "Namespace",
        "metadata": {"name": name, "namespace": kube_ns},
        "spec": spec,
    }


def dense(name: str = "text_v1", **extra: Any) -> dict[str, Any]:
    return {"name": name, "size": 4, "distance": "Cosine", **extra}


def apply(kubectl: Kubectl, manifest: Manifest, check: bool = True) -> Any:
    return kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=check)


@pytest.fixture(scope="module")
def crds(kubectl: Kubectl, wait_for: WaitFor) -> None:
    """Both CRDs applied with `kubectl apply -f crds/`, Established and discoverable."""
    kubectl("apply", "-f", str(CRDS))
    kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        *(f"crd/{name}" for name in CRD_NAMES),
    )
    wait_for(
        lambda: kubectl("get", "vns", "--all-namespaces", check=False).returncode == 0,
        timeout=30,
        message="the vns short name to be discoverable",
    )


@pytest.fixture(scope="module")
def kube_ns(kubectl: Kubectl, crds: None) -> Iterator[str]:
    """This module's own Kubernetes namespace; its Plugins are labelled and deleted too."""
    name = f"crd-validation-{SUFFIX}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
    kubectl(
        "delete",
        "plugins.vectorschema.dev",
        "-l",
        f"{TEST_LABEL}=crd-validation",
        "--wait=false",
        "--ignore-not-found",
        check=False,
    )


def get_json(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


# --- rejected ------------------------------------------------------------------------


def invalid_cases(kube_ns: str) -> list[tuple[str, Manifest, list[str]]]:
    """(id, manifest, substrings the API server's error must contain)"""
    p = f"invalid-{SUFFIX}"
    return [
        (
            "sparse vector with size",
            plugin(p, [{"name": "bm25", "type": "sparse", "size": 4}]),
            ["spec.vectors[0].size", "size is not allowed for sparse vectors"],
        ),
        (
            "sparse vector with distance",
            plugin(p, [{"name": "bm25", "type": "sparse", "distance": "Dot"}]),
            ["spec.vectors[0].distance", "distance is not allowed for sparse vectors"],
        ),
        (
            "dense vector without size",
            plugin(p, [{"name": "text_v1", "distance": "Cosine"}]),
            ["spec.vectors[0].size", "Required value", "size is required"],
        ),
        (
            "multidense vector without distance",
            plugin(p, [{"name": "colbert", "type": "multidense", "size": 128}]),
            ["spec.vectors[0].distance", "Required value", "distance is required"],
        ),
        (
            "modifier on a dense vector",
            plugin(p, [dense(modifier="idf")]),
            ["spec.vectors[0].modifier", "modifier is only allowed for sparse vectors"],
        ),
        (
            "bad distance enum",
            plugin(p, [dense(distance="cosine")]),
            ["spec.vectors[0].distance", "Unsupported value", '"cosine"'],
        ),
        (
            "duplicate vector name in a Plugin",
            plugin(p, [dense("text_v1"), dense("text_v1", size=8)]),
            ["spec.vectors[1]", "Duplicate value", "text_v1"],
        ),
        (
            "invalid vector name",
            plugin(p, [dense("bad name!")]),
            ["spec.vectors[0].name", "should match"],
        ),
        (
            "empty vector list",
            plugin(p, []),
            ["spec.vectors", "should have at least 1 items"],
        ),
        (
            "product quantization without compression",
            plugin(p, [dense(quantization={"type": "product"})]),
            [
                "spec.vectors[0].quantization.compression",
                "compression is required when type is product",
            ],
        ),
        (
            "quantile on binary quantization",
            plugin(p, [dense(quantization={"type": "binary", "quantile": 0.99})]),
            ["spec.vectors[0].quantization.quantile", "quantile is only allowed"],
        ),
        (
            "duplicate plugin name in a Namespace",
            vns(p, kube_ns, plugins=[{"name": "text"}, {"name": "text"}]),
            ["spec.plugins[1]", "Duplicate value", "text"],
        ),
        (
            "duplicate inline vector name in a Namespace",
            vns(p, kube_ns, plugins=[{"name": "text", "vectors": [dense(), dense()]}]),
            ["spec.plugins[0].vectors[1]", "Duplicate value"],
        ),
        (
            "sparse inline vector with size",
            vns(
                p,
                kube_ns,
                plugins=[{"name": "bm25", "vectors": [{"name": "s", "type": "sparse", "size": 1}]}],
            ),
            ["spec.plugins[0].vectors[0].size", "size is not allowed for sparse vectors"],
        ),
        (
            "duplicate collection id",
            vns(p, kube_ns, collections=[{"id": "c1"}, {"id": "c1"}]),
            ["spec.collections[1]", "Duplicate value"],
        ),
        (
            "strategy not in enum",
            vns(p, kube_ns, strategy="Sometimes"),
            ["spec.strategy", "Unsupported value", '"Sometimes"'],
        ),
        (
            "deletionPolicy not in enum",
            vns(p, kube_ns, deletionPolicy="Orphan"),
            ["spec.deletionPolicy", "Unsupported value"],
        ),
        (
            "confirmPlan not a fingerprint",
            vns(p, kube_ns, confirmPlan="yes"),
            ["spec.confirmPlan", "should match"],
        ),
    ]


INVALID_IDS = [case[0] for case in invalid_cases("x")]


def spec_model(manifest: Manifest) -> type[BaseModel]:
    return api.PluginSpec if manifest["kind"] == "Plugin" else api.NamespaceSpec


@pytest.mark.parametrize("case", INVALID_IDS)
def test_invalid_object_is_rejected_naming_the_field(
    kubectl: Kubectl, kube_ns: str, case: str
) -> None:
    manifest, expected = next((m, e) for i, m, e in invalid_cases(kube_ns) if i == case)
    result = apply(kubectl, manifest, check=False)
    assert result.returncode != 0, f"accepted: {result.stdout}"
    for text in expected:
        assert text in result.stderr, f"{text!r} not in:\n{result.stderr}"
    # The models refuse it too: the CLI and the API server agree.
    with pytest.raises(ValidationError):
        spec_model(manifest).model_validate(manifest["spec"])


# --- accepted and defaulted ----------------------------------------------------------


def test_valid_plugin_is_accepted_and_defaulted(kubectl: Kubectl, kube_ns: str) -> None:
    name = f"valid-{SUFFIX}"
    manifest = plugin(
        name,
        [
            dense("multilingual_e5_large_instruct_v1", size=1024, datatype="float16"),
            {"name": "bm25", "type": "sparse", "modifier": "idf"},
            {
                "name": "colbert",
                "type": "multidense",
                "size": 128,
                "distance": "Dot",
                "onDisk": True,
                "hnsw": {"m": 0},
                "quantization": {"type": "product", "compression": "x16", "alwaysRam": True},
            },
            dense("scalar_q", quantization={"type": "scalar", "quantile": 0.99}),
        ],
    )
    api.PluginSpec.model_validate(manifest["spec"])
    apply(kubectl, manifest)
    live = get_json(kubectl, "plugins.vectorschema.dev", name)
    assert [v["type"] for v in live["spec"]["vectors"]] == [
        "dense",
        "sparse",
        "multidense",
        "dense",
    ]
    assert live["spec"]["vectors"][0]["size"] == 1024
    # What the API server stores parses back into the model.
    api.PluginResource.model_validate(live)


def test_valid_namespace_is_accepted_and_defaulted(kubectl: Kubectl, kube_ns: str) -> None:
    manifest = vns(
        "tenant",
        kube_ns,
        plugins=[
            {"name": "text"},
            {"name": "image", "vectors": [dense("fashionsiglip_v1_embedding", size=768)]},
        ],
        collections=[{"id": "products", "plugins": ["text", "image"]}, {"id": "docs"}],
        qdrant={"url": "http://qdrant:6333", "apiKeySecretRef": {"name": "q", "key": "k"}},
    )
    api.NamespaceSpec.model_validate(manifest["spec"])
    apply(kubectl, manifest)
    spec = get_json(kubectl, "vns", "-n", kube_ns, "tenant")["spec"]
    assert spec["strategy"] == "Auto"
    assert spec["deletionPolicy"] == "Retain"
    assert spec["confirm"] is False
    assert spec["adopt"] is False
    assert spec["plugins"][1]["vectors"][0]["type"] == "dense"
    assert api.NamespaceSpec.model_validate(spec).strategy is api.Strategy.AUTO


def test_namespace_without_spec_gets_the_defaults(kubectl: Kubectl, kube_ns: str) -> None:
    manifest = vns("bare", kube_ns)
    del manifest["spec"]
    apply(kubectl, manifest)
    spec = get_json(kubectl, "vns", "-n", kube_ns, "bare")["spec"]
    assert spec == {
        "adopt": False,
        "confirm": False,
        "deletionPolicy": "Retain",
        "reprocess": "Manual",
        "strategy": "Auto",
    }


def test_unknown_fields_are_refused_by_kubectl(kubectl: Kubectl, kube_ns: str) -> None:
    """kubectl's default --validate=strict turns pruning into an error naming the field."""
    manifest = vns("typo", kube_ns, stratgy="Recreate")
    result = apply(kubectl, manifest, check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.stratgy"' in result.stderr


def test_status_written_by_the_operator_round_trips(kubectl: Kubectl, kube_ns: str) -> None:
    """Everything the status model writes is stored as is: nothing pruned, nothing refused."""
    apply(kubectl, vns("status", kube_ns, plugins=[{"name": "text"}]))
    status = api.NamespaceStatus(
        collection=f"{kube_ns}_status",
        points_count=10,
        vectors=["text_v1"],
        plan=api.PlanStatus.model_validate(
            {
                "fingerprint": "0123456789abcdef",
                "destructive": True,
                "actions": [
                    {"action": "removeVector", "vector": "old", "destructive": True},
                    {"action": "addVector", "vector": "text_v1", "detail": "dense 4, Cosine"},
                ],
                "pointsAtRisk": 10,
                "vectorsAtRisk": ["old"],
                "reason": "removes a vector",
            }
        ),
        last_reconfigure=api.LastReconfigure.model_validate(
            {
                "status": "reconfigured",
                "previousPointsCount": 10,
                "vectorsAdded": ["text_v1"],
                "vectorsTotal": ["text_v1"],
                "collectionsToReprocess": ["products"],
                "message": "done",
                "vectorsRemoved": ["old"],
                "pointsDeleted": 10,
                "strategy": "Recreate",
                "planFingerprint": "0123456789abcdef",
                "time": "2026-01-01T00:00:00Z",
            }
        ),
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    status.set_awaiting_confirmation("confirm to apply", generation=1, now=now)
    wire = status.to_wire()
    patch = ["--subresource=status", "--type=merge", "-p", json.dumps({"status": wire})]
    kubectl("patch", "vns", "status", "-n", kube_ns, *patch)
    stored = get_json(kubectl, "vns", "status", "-n", kube_ns)["status"]
    assert api.NamespaceStatus.model_validate(stored) == status
    assert stored == wire


# --- what people see -------------------------------------------------------------------


def test_kubectl_explain_shows_the_model_descriptions(
    kubectl: Kubectl, crds: None, wait_for: WaitFor
) -> None:
    description = api.NamespaceSpec.model_fields["plugins"].description
    assert description
    first_words = " ".join(description.split()[:5])

    def explained(*args: str) -> str | None:
        out: str = kubectl("explain", *args, check=False).stdout
        return out if first_words in " ".join(out.split()) else None

    out = wait_for(
        lambda: explained("vns.spec.plugins"), timeout=30, message="kubectl explain (OpenAPI)"
    )
    assert "GROUP:      vectorschema.dev" in out
    assert "vectors\t<[]Object>" in out
    assert "-required-" in out  # name
    assert explained("namespaces.spec.plugins", "--api-version=vectorschema.dev/v1alpha1")
    vector = kubectl("explain", "vplugin.spec.vectors.size").stdout
    assert "Required for dense and multidense, forbidden for sparse" in vector


def test_get_by_short_name_shows_the_printer_columns(kubectl: Kubectl, kube_ns: str) -> None:
    apply(kubectl, vns("columns", kube_ns, plugins=[{"name": "text"}]))
    status = {
        "status": {
            "collection": f"{kube_ns}_columns",
            "pointsCount": 1234,
            "vectors": ["multilingual_e5_large_instruct_v1", "bm25"],
            "vectorCount": 2,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Reconciled",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }
    patch = ["--subresource=status", "--type=merge", "-p", json.dumps(status)]
    kubectl("patch", "vns", "columns", "-n", kube_ns, *patch)
    header, row = kubectl("get", "vns", "columns", "-n", kube_ns).stdout.splitlines()
    assert header.split() == ["NAME", "READY", "REASON", "VECTORS", "POINTS", "AGE"]
    assert row.split()[:5] == ["columns", "True", "Reconciled", "2", "1234"]
    wide = kubectl("get", "vns", "columns", "-n", kube_ns, "-o", "wide").stdout
    header = wide.splitlines()[0]
    assert header.split() == [
        "NAME",
        "READY",
        "REASON",
        "VECTORS",
        "POINTS",
        "AGE",
        "COLLECTION",
        "PLAN",
        "NAMES",
    ]
    assert f"{kube_ns}_columns" in wide
    # The names (priority 1) render as compact JSON in the wide output.
    assert '["multilingual_e5_large_instruct_v1","bm25"]' in wide


def test_plugin_printer_columns(kubectl: Kubectl, kube_ns: str) -> None:
    name = f"columns-{SUFFIX}"
    apply(kubectl, plugin(name, [dense()]))
    header = kubectl("get", "vplugin", name).stdout.splitlines()[0]
    assert header.split() == ["NAME", "READY", "REASON", "VECTORS", "AGE"]


def test_category_lists_both_kinds(kubectl: Kubectl, kube_ns: str) -> None:
    apply(kubectl, vns("category", kube_ns))
    name = f"category-{SUFFIX}"
    apply(kubectl, plugin(name, [dense()]))
    out = kubectl("get", "vectorschema", "-n", kube_ns, "-o", "name").stdout.split()
    assert "namespace.vectorschema.dev/category" in out
    assert f"plugin.vectorschema.dev/{name}" in out
