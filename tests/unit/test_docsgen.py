"""The generated reference pages of the docs site are what `make docs-gen` writes, and the
generator refuses to document less than the code has.

`tools/docsgen.py` writes the CRD, reasons, metrics, Helm values, environment, retry
schedule, CLI and make-target pages from their sources; a committed page that differs
(someone changed a model, a value's comment, a metric) fails here until `make docs-gen`
is run, like the CRD copies.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import docsgen
from vectorschema import cli

REPO = Path(__file__).resolve().parents[2]


def test_committed_pages_are_what_the_generator_writes() -> None:
    pages = docsgen.render()
    stale = [str(p.relative_to(REPO)) for p in docsgen.stale(pages)]
    assert not stale, f"run `make docs-gen`: these pages differ from their sources: {stale}"


def test_every_generated_page_is_in_the_site_navigation() -> None:
    nav = (REPO / "mkdocs.yml").read_text()
    for path in docsgen.render():
        assert f"reference/{path.name}" in nav, path.name


def test_a_reason_without_a_meaning_stops_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    reasons = dict(docsgen.REASONS)
    del reasons["OperationHalted"]
    monkeypatch.setattr(docsgen, "REASONS", reasons)
    with pytest.raises(docsgen.DocsGenError, match="OperationHalted"):
        docsgen.reasons_page()


def test_an_event_reason_without_a_meaning_stops_the_generator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = dict(docsgen.EVENT_REASONS)
    del events["PlanPending"]
    monkeypatch.setattr(docsgen, "EVENT_REASONS", events)
    with pytest.raises(docsgen.DocsGenError, match="PlanPending"):
        docsgen.reasons_page()


def test_an_environment_variable_the_operator_reads_must_be_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = dict(docsgen.ENVIRONMENT)
    del env["VECTORSCHEMA_QDRANT_TIMEOUT"]
    monkeypatch.setattr(docsgen, "ENVIRONMENT", env)
    with pytest.raises(docsgen.DocsGenError, match="VECTORSCHEMA_QDRANT_TIMEOUT"):
        docsgen.environment_page()


def test_a_listed_variable_nobody_reads_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**docsgen.ENVIRONMENT, "VECTORSCHEMA_GONE": ("unset", "nothing")}
    monkeypatch.setattr(docsgen, "ENVIRONMENT", env)
    with pytest.raises(docsgen.DocsGenError, match="VECTORSCHEMA_GONE"):
        docsgen.environment_page()


def test_the_environment_scan_finds_what_settings_read() -> None:
    read = docsgen.environment_read()
    for name in ("QDRANT_URL", "VECTORSCHEMA_RESYNC_SECONDS", "VECTORSCHEMA_WEBHOOK_CLIENT_CA"):
        assert name in read


def test_a_metric_missing_from_the_docstring_stops_the_generator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from vectorschema.k8s import metrics

    doc = metrics.__doc__ or ""
    cut = re.sub(r"^- `vectorschema_points_deleted_total`.*?(?=^- )", "", doc, flags=re.M | re.S)
    assert cut != doc
    monkeypatch.setattr(metrics, "__doc__", cut)
    with pytest.raises(docsgen.DocsGenError, match="vectorschema_points_deleted_total"):
        docsgen.metrics_page()


def test_every_metric_is_on_the_page() -> None:
    page = docsgen.metrics_page()
    for series in docsgen.registered_series():
        assert f"| `{series.name}` |" in page


def test_helm_values_parser_keeps_comments_and_defaults() -> None:
    text = (
        "# file header\n"
        "\n"
        "# The image.\n"
        "image:\n"
        "  # Where from.\n"
        "  repository: x/y\n"
        '  tag: ""\n'
        "replicas: 2  # not a comment we read\n"
        "list: []\n"
    )
    values = {v.path: v for v in docsgen.helm_values(text)}
    assert values["image"].comment == "The image." and not values["image"].leaf
    assert values["image.repository"].comment == "Where from."
    assert values["image.repository"].default == "x/y"
    assert values["image.tag"].default == "" and values["image.tag"].comment == ""
    assert values["replicas"].default == 2 and values["replicas"].leaf
    assert values["list"].default == []


def test_every_helm_value_is_on_the_page_and_described() -> None:
    """Every leaf of values.yaml is a row, and has a comment of its own or its section's."""
    text = (REPO / "charts" / "vectorschema" / "values.yaml").read_text()
    values = docsgen.helm_values(text)
    by_path = {v.path: v for v in values}
    page = (REPO / "docs" / "reference" / "helm-values.md").read_text()
    undocumented = []
    for v in values:
        if not v.leaf:
            continue
        assert f"| `{v.path}` |" in page, v.path
        parents = [".".join(v.path.split(".")[:i]) for i in range(1, v.path.count(".") + 1)]
        if not v.comment and not any(by_path[p].comment for p in parents):
            undocumented.append(v.path)
    assert not undocumented, f"values.yaml values without a comment: {undocumented}"
    leaves = {p for p, v in by_path.items() if v.leaf}
    flat = set(_leaves(yaml.safe_load(text)))
    assert flat <= leaves, flat - leaves


def _leaves(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        out: list[str] = []
        for key, value in node.items():
            out += _leaves(value, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [prefix]


def test_the_status_contract_names_every_seed_field_and_its_status_field() -> None:
    """reference/status.md maps each key of the seed's response (the CLI prints exactly
    these) to a `lastReconfigure` field, and lists every `lastReconfigure` field the CRD
    has."""
    page = (REPO / "docs" / "reference" / "status.md").read_text()
    for key in cli.SEED_KEYS:
        assert f"| `{key}` |" in page, key
    crd = yaml.safe_load((REPO / "crds" / "namespaces.vectorschema.dev.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    for field in status["lastReconfigure"]["properties"]:
        assert f"`{field}`" in page or f"`lastReconfigure.{field}`" in page, field
    for field in status:
        assert f"`{field}" in page, f"status.{field} is not in the status contract"
