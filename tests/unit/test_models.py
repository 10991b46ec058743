"""Model rules that the CRD schema cannot carry (they need metadata and spec together)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from vectorschema.api import NamespaceResource, default_collection_name, describe


def test_default_collection_name_is_namespace_underscore_name() -> None:
    assert default_collection_name("tenant-acme", "catalog") == "tenant-acme_catalog"
    # '_' appears in neither part, so different (namespace, name) pairs never collide.
    assert default_collection_name("a-b", "c") != default_collection_name("a", "b-c")


def test_a_name_too_long_for_a_collection_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        NamespaceResource.model_validate({"metadata": {"name": "n" * 253, "namespace": "ns"}})
    message = describe(info.value)
    assert message.startswith("metadata.name: cannot derive a valid collection name")
    assert "spec.collectionName" in message


def test_an_explicit_collection_name_lifts_the_limit() -> None:
    resource = NamespaceResource.model_validate(
        {"metadata": {"name": "n" * 253, "namespace": "ns"}, "spec": {"collectionName": "c1"}}
    )
    assert resource.collection_name == "c1"
