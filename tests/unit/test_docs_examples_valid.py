"""The manifests the docs show are files (included with `--8<--`), and they are valid.

The tutorials' manifests are applied for real by `tests/e2e/test_docs_examples.py`; the
annotated ones of the explanation and how-to pages are not applied anywhere, so here
every vectorschema document under `docs/examples/` and `manifests/samples/` is validated
against the models the CRDs are generated from. A file named `bad-*.yaml` shows a refusal:
it must fail. And no docs page copies a manifest of ours inline instead of including it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from vectorschema.api import (
    API_VERSION,
    NAMESPACE_KIND,
    PLUGIN_KIND,
    NamespaceResource,
    PluginResource,
)

REPO = Path(__file__).resolve().parents[2]
FILES = sorted(
    [
        *(REPO / "docs" / "examples").rglob("*.yaml"),
        *(REPO / "manifests" / "samples").glob("*.yaml"),
    ]
)


def ours(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    return [d for d in docs if d.get("apiVersion") == API_VERSION]


def validate(doc: dict[str, Any]) -> None:
    model = {PLUGIN_KIND: PluginResource, NAMESPACE_KIND: NamespaceResource}[doc["kind"]]
    model.model_validate(doc)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_example_manifest_is_valid(path: Path) -> None:
    docs = ours(path)  # a file of core objects only (a Kubernetes namespace) has none
    if path.name.startswith("bad-"):
        assert docs
        with pytest.raises(ValidationError):
            for doc in docs:
                validate(doc)
    else:
        for doc in docs:
            validate(doc)


def test_no_page_copies_a_manifest_of_ours_inline() -> None:
    """A YAML block with our apiVersion on a page is an include, not a copy."""
    pages = [*(REPO / "docs").rglob("*.md"), REPO / "README.md"]
    copies = []
    for page in pages:
        for block in re.findall(r"```yaml[^\n]*\n(.*?)```", page.read_text(), re.S):
            if API_VERSION in block and "--8<--" not in block:
                copies.append(str(page.relative_to(REPO)))
    assert not copies, f"include the manifest from a file (--8<--) instead: {copies}"


def test_the_readmes_links_resolve() -> None:
    """`make docs` checks the site's links; the README is outside the site, so here."""
    text = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links into the docs"
    missing = [t for t in local if not (REPO / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
