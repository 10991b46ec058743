"""The committed CRDs are what the models generate, and they are structural.

A drifted `crds/*.yaml` would make the API server validate something other than what the
models (and so the CLI and the operator) validate; a non-structural schema would be
refused by the API server. Both are caught here, without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from vectorschema import api, crdgen

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
NAMESPACE_FILE = "namespaces.vectorschema.dev.yaml"
PLUGIN_FILE = "plugins.vectorschema.dev.yaml"

Schema = dict[str, Any]


def load(name: str) -> Schema:
    data = yaml.safe_load((CRDS / name).read_text())
    assert isinstance(data, dict)
    return data


def root_schema(crd: Schema) -> Schema:
    (version,) = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    assert isinstance(schema, dict)
    return schema


def at(schema: Schema, path: str) -> Schema:
    """The node at a dotted path; `[]` steps into array items (`spec.plugins[].vectors`)."""
    node = schema
    for part in path.split("."):
        items = part.endswith("[]")
        node = node["properties"][part.removesuffix("[]")]
        if items:
            node = node["items"]
    return node


def walk(node: Any, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node (not CEL rules or defaults) with its path."""
    if not isinstance(node, dict):
        return
    yield path, node
    for name, prop in node.get("properties", {}).items():
        yield from walk(prop, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")


@pytest.fixture(params=[NAMESPACE_FILE, PLUGIN_FILE])
def crd(request: pytest.FixtureRequest) -> Schema:
    return load(request.param)


# --- drift -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [NAMESPACE_FILE, PLUGIN_FILE])
def test_committed_yaml_is_generated(name: str) -> None:
    generated = crdgen.generate()
    assert set(generated) == {NAMESPACE_FILE, PLUGIN_FILE}
    assert (CRDS / name).read_text() == generated[name], (
        f"crds/{name} is stale: run `python -m vectorschema.crdgen` (from the repo root)"
    )


def test_generation_is_deterministic() -> None:
    assert crdgen.generate() == crdgen.generate()


def test_check_passes_on_committed_files(capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--check", "--out", str(CRDS)]) == 0
    assert capsys.readouterr().out == ""


def test_check_fails_with_a_diff_on_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    stale = tmp_path / PLUGIN_FILE
    stale.write_text(stale.read_text().replace("maxItems: 64", "maxItems: 65", 1))
    capsys.readouterr()
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "-                maxItems: 65" in out
    assert "+                maxItems: 64" in out
    assert "maxItems: 65" in stale.read_text(), "--check must not write"


def test_check_fails_when_a_file_is_missing(tmp_path: Path) -> None:
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1
    assert not list(tmp_path.iterdir())


# --- structural ---------------------------------------------------------------------


FORBIDDEN_KEYS = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const"}


def test_schema_is_structural(crd: Schema) -> None:
    for path, node in walk(root_schema(crd)):
        where = path or "<root>"
        assert not FORBIDDEN_KEYS & set(node), f"{where}: {sorted(FORBIDDEN_KEYS & set(node))}"
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), f"{where}: no type"
        assert node.get("type") != "null", f"{where}: type null (use nullable)"
        assert node.get("additionalProperties") is not False, f"{where}: additionalProperties"
        assert "default" not in node or node["default"] is not None, f"{where}: default null"
        assert node.get("nullable", True) is True, f"{where}: nullable: false is noise"
        if "properties" in node or "required" in node:
            assert node["type"] == "object", where
            assert set(node.get("required", [])) <= set(node.get("properties", {})), where
        if "items" in node:
            assert node["type"] == "array", where
        assert "uniqueItems" not in node, f"{where}: use x-kubernetes-list-type"


#: The one place unknown fields are kept: a Plugin's Job template (a batch/v1 JobTemplateSpec
#: the API server validates as a Job when the operator creates one).
PRESERVED_UNDER = ".spec.backfill.jobTemplate.spec"


def test_no_preserve_unknown_fields(crd: Schema) -> None:
    """kopf progress goes to annotations: status has no free-form `kopf` object; only the
    Plugin's Job template keeps unknown fields."""
    for path, node in walk(root_schema(crd)):
        if path.startswith(PRESERVED_UNDER):
            continue
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
    assert "kopf" not in root_schema(crd)["properties"]["status"]["properties"]


@pytest.mark.parametrize("part", ["spec", "status"])
def test_every_field_is_described(crd: Schema, part: str) -> None:
    for path, node in walk(root_schema(crd)["properties"][part], part):
        if not path.endswith("[]") or node["type"] == "object":
            assert node.get("description"), f"{path}: no description (kubectl explain)"


def test_list_map_keys_are_required_and_not_defaulted(crd: Schema) -> None:
    for path, node in walk(root_schema(crd)):
        if node.get("x-kubernetes-list-type") != "map":
            continue
        items = node["items"]
        for key in node["x-kubernetes-list-map-keys"]:
            assert key in items["required"], f"{path}: key {key} not required"
            assert "default" not in items["properties"][key], f"{path}: key {key} defaulted"
            assert not items["properties"][key].get("nullable"), f"{path}: key {key} nullable"


def test_lists_carrying_cel_rules_are_bounded(crd: Schema) -> None:
    """The API server estimates a rule's cost times the list sizes above it: bound them."""

    def check(node: Any, path: str, bounded: bool) -> None:
        if not isinstance(node, dict):
            return
        if node.get("x-kubernetes-validations"):
            assert bounded, f"{path}: CEL rules under an unbounded list"
        for name, prop in node.get("properties", {}).items():
            check(prop, f"{path}.{name}", bounded)
        if "items" in node:
            check(node["items"], f"{path}[]", bounded and "maxItems" in node)

    check(root_schema(crd), "", True)


# --- names, scope, columns -----------------------------------------------------------


def test_namespace_names_and_scope() -> None:
    crd = load(NAMESPACE_FILE)
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["metadata"]["name"] == "namespaces.vectorschema.dev"
    assert crd["spec"]["group"] == "vectorschema.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": "Namespace",
        "listKind": "NamespaceList",
        "plural": "namespaces",
        "singular": "namespace",
        "shortNames": ["vns"],
        "categories": ["vectorschema"],
    }


def test_plugin_names_and_scope() -> None:
    crd = load(PLUGIN_FILE)
    assert crd["metadata"]["name"] == "plugins.vectorschema.dev"
    assert crd["spec"]["group"] == "vectorschema.dev"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"] == {
        "kind": "Plugin",
        "listKind": "PluginList",
        "plural": "plugins",
        "singular": "plugin",
        "shortNames": ["vplugin"],
        "categories": ["vectorschema"],
    }


def test_one_served_storage_version_with_status_subresource(crd: Schema) -> None:
    (version,) = crd["spec"]["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}


READY = '.status.conditions[?(@.type=="Ready")]'


def columns(crd: Schema) -> list[tuple[str, str, str, int]]:
    (version,) = crd["spec"]["versions"]
    return [
        (c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
        for c in version["additionalPrinterColumns"]
    ]


def test_namespace_printer_columns() -> None:
    assert columns(load(NAMESPACE_FILE)) == [
        ("Ready", "string", f"{READY}.status", 0),
        ("Reason", "string", f"{READY}.reason", 0),
        ("Vectors", "integer", ".status.vectorCount", 0),
        ("Points", "integer", ".status.pointsCount", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
        ("Collection", "string", ".status.collection", 1),
        ("Plan", "string", ".status.plan.fingerprint", 1),
        ("Names", "string", ".status.vectors", 1),
    ]


def test_plugin_printer_columns() -> None:
    assert columns(load(PLUGIN_FILE)) == [
        ("Ready", "string", f"{READY}.status", 0),
        ("Reason", "string", f"{READY}.reason", 0),
        ("Vectors", "string", ".status.vectors", 0),
        ("Age", "date", ".metadata.creationTimestamp", 0),
    ]


def test_printer_columns_point_into_the_schema(crd: Schema) -> None:
    schema = root_schema(crd)
    for name, _, path, _ in columns(crd):
        if path.startswith(".metadata."):
            continue
        fields = path.removeprefix(".").split("[")[0].split(".")
        node = schema
        for field in fields:
            assert field in node.get("properties", {}), f"column {name}: {path}"
            node = node["properties"][field]


# --- content ------------------------------------------------------------------------


def test_spec_defaults_are_served_by_the_api_server() -> None:
    spec = root_schema(load(NAMESPACE_FILE))["properties"]["spec"]
    assert spec["default"] == {}
    assert at(spec, "strategy")["default"] == "Auto"
    assert at(spec, "deletionPolicy")["default"] == "Retain"
    assert at(spec, "confirm")["default"] is False
    assert at(spec, "plugins[].vectors[].type")["default"] == "dense"
    assert "required" not in root_schema(load(NAMESPACE_FILE))
    assert root_schema(load(PLUGIN_FILE))["required"] == ["spec"]


def test_enums_and_bounds_are_kept() -> None:
    vector = at(root_schema(load(PLUGIN_FILE)), "spec.vectors[]")
    assert at(vector, "distance")["enum"] == ["Cosine", "Dot", "Euclid", "Manhattan"]
    assert at(vector, "distance")["nullable"] is True
    assert at(vector, "type")["enum"] == ["dense", "sparse", "multidense"]
    assert at(vector, "name")["pattern"] == api.VECTOR_NAME_PATTERN
    assert at(vector, "size")["maximum"] == api.MAX_DENSE_SIZE
    assert at(vector, "quantization.compression")["enum"] == ["x4", "x8", "x16", "x32", "x64"]
    assert at(vector, "quantization.quantile")["minimum"] == 0.5
    vectors = at(root_schema(load(PLUGIN_FILE)), "spec.vectors")
    assert (vectors["minItems"], vectors["maxItems"]) == (1, 64)


@pytest.mark.parametrize(
    ("file", "path", "keys"),
    [
        (PLUGIN_FILE, "spec.vectors", ["name"]),
        (NAMESPACE_FILE, "spec.plugins", ["name"]),
        (NAMESPACE_FILE, "spec.plugins[].vectors", ["name"]),
        (NAMESPACE_FILE, "spec.collections", ["id"]),
        (NAMESPACE_FILE, "status.conditions", ["type"]),
        (PLUGIN_FILE, "status.conditions", ["type"]),
    ],
)
def test_list_maps(file: str, path: str, keys: list[str]) -> None:
    node = at(root_schema(load(file)), path)
    assert node["x-kubernetes-list-type"] == "map"
    assert node["x-kubernetes-list-map-keys"] == keys


def rules(node: Schema) -> dict[str, tuple[str, str]]:
    """message -> (fieldPath, reason)"""
    return {r["message"]: (r["fieldPath"], r["reason"]) for r in node["x-kubernetes-validations"]}


@pytest.mark.parametrize(
    ("file", "path"),
    [(PLUGIN_FILE, "spec.vectors[]"), (NAMESPACE_FILE, "spec.plugins[].vectors[]")],
)
def test_vector_cel_rules(file: str, path: str) -> None:
    vector = at(root_schema(load(file)), path)
    assert rules(vector) == {
        "size is required for dense and multidense vectors": (".size", "FieldValueRequired"),
        "size is not allowed for sparse vectors": (".size", "FieldValueForbidden"),
        "distance is required for dense and multidense vectors": (
            ".distance",
            "FieldValueRequired",
        ),
        "distance is not allowed for sparse vectors": (".distance", "FieldValueForbidden"),
        "modifier is only allowed for sparse vectors": (".modifier", "FieldValueForbidden"),
        "onDisk is not allowed for sparse vectors": (".onDisk", "FieldValueForbidden"),
        "quantization is not allowed for sparse vectors": (
            ".quantization",
            "FieldValueForbidden",
        ),
        "datatype uint8 is not allowed for sparse vectors": (".datatype", "FieldValueInvalid"),
    }
    assert rules(at(vector, "quantization")) == {
        "compression is required when type is product": (".compression", "FieldValueRequired"),
        "compression is only allowed when type is product": (
            ".compression",
            "FieldValueForbidden",
        ),
        "quantile is only allowed when type is scalar": (".quantile", "FieldValueForbidden"),
    }


def test_cel_field_paths_exist(crd: Schema) -> None:
    for path, node in walk(root_schema(crd)):
        for rule in node.get("x-kubernetes-validations", []):
            field = rule["fieldPath"].removeprefix(".")
            assert field in node["properties"], f"{path}: fieldPath {rule['fieldPath']}"
            assert rule["message"] and rule["rule"], path


def test_descriptions_come_from_the_models() -> None:
    spec = root_schema(load(NAMESPACE_FILE))["properties"]["spec"]
    plugins = at(spec, "plugins")
    field = api.NamespaceSpec.model_fields["plugins"]
    assert plugins["description"] == field.description
    assert plugins["items"]["description"].startswith("A plugin deployed to the namespace")
    assert spec["description"] == api.NamespaceSpec.__doc__
    root = root_schema(load(NAMESPACE_FILE))
    assert "vns" in root["description"]
    assert "\n" not in root["description"], "docstring line breaks are joined"


# --- the converter ------------------------------------------------------------------


class _Union(BaseModel):
    value: int | str


class _Exclusive(BaseModel):
    """Doc."""

    ratio: float = Field(gt=0, lt=1)
    tag: str = "x"


def test_unions_are_refused() -> None:
    with pytest.raises(crdgen.SchemaError, match="unions"):
        crdgen.structural_schema(_Union, "validation", "spec")


def test_exclusive_bounds_become_openapi_v3_flags() -> None:
    schema = crdgen.structural_schema(_Exclusive, "validation", "spec")
    assert schema == {
        "description": "Doc.",
        "type": "object",
        "properties": {
            "ratio": {
                "type": "number",
                "minimum": 0,
                "exclusiveMinimum": True,
                "maximum": 1,
                "exclusiveMaximum": True,
            },
            "tag": {"type": "string", "default": "x"},
        },
        "required": ["ratio"],
    }


class _Item(BaseModel):
    key: str = "same"


class _DefaultedKey(BaseModel):
    items: list[_Item] = Field(
        max_length=4,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["key"]},
    )


def test_list_map_key_with_a_default_is_refused() -> None:
    """Two items that both omit the key would collide on its default: demand it required."""
    with pytest.raises(crdgen.SchemaError, match="must be a required field"):
        crdgen.structural_schema(_DefaultedKey, "validation", "spec")


def model_fields(model: type[BaseModel], schema: Schema, path: str) -> Iterator[str]:
    """Paths of model fields missing from the schema (the API server would prune them)."""
    props = schema.get("properties", {})
    for name, field in model.model_fields.items():
        alias = field.alias or name
        if alias not in props:
            yield f"{path}.{alias}"
            continue
        node = props[alias]
        node = node.get("items", node)
        for arg in _models_in(field.annotation):
            yield from model_fields(arg, node, f"{path}.{alias}")


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()):
        yield from _models_in(arg)


@pytest.mark.parametrize(
    ("file", "spec", "status"),
    [
        (NAMESPACE_FILE, api.NamespaceSpec, api.NamespaceStatus),
        (PLUGIN_FILE, api.PluginSpec, api.PluginStatus),
    ],
)
def test_every_model_field_is_in_the_schema(
    file: str, spec: type[BaseModel], status: type[BaseModel]
) -> None:
    root = root_schema(load(file))
    missing = [
        *model_fields(spec, root["properties"]["spec"], "spec"),
        *model_fields(status, root["properties"]["status"], "status"),
    ]
    assert not missing
