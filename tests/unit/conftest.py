"""Shared builders for the unit tests: short dicts and names in, models out.

The planner's tests are tables; these builders keep each row to one line:

- `dense("text", 1024)`, `sparse("bm25", modifier="idf")`, `multidense("colbert", 128)`
  make a `VectorSpec` (camelCase or snake_case keyword arguments both work);
- `vdef(...)` is the normalised `VectorDef` of a spec (what the gateway reports for a
  collection created from it);
- `ns_spec({...})` validates a Namespace spec from its manifest form (camelCase dict);
- `desired_of(...)` resolves a spec against plugins, `observed_of(...)` builds the live
  collection;
- `namespace(...)` builds a whole `NamespaceResource` for `reconcile()`.

The seed's own vectors are constants: `TEXT` (multilingual_e5_large_instruct_v1, 1024,
Cosine) and `IMAGE` (fashionsiglip_v1_embedding, 768, Cosine).

Test modules import these with `from conftest import ...` (tests/unit has no
`__init__.py`, so pytest puts this directory on `sys.path`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.seams import forget

from vectorschema.api import (
    NamespaceResource,
    NamespaceSpec,
    NamespaceStatus,
    PluginSpec,
    VectorSpec,
)
from vectorschema.core.planning import resolve_desired
from vectorschema.core.schema import (
    Capabilities,
    CollectionSettings,
    DesiredSchema,
    ObservedCollection,
    VectorDef,
    vector_def_from_spec,
)
from vectorschema.qdrant.client import ClientGateway
from vectorschema.qdrant.pool import connect

# --- vectors --------------------------------------------------------------------------


def vector(name: str, **fields: Any) -> VectorSpec:
    """A VectorSpec from keyword arguments (manifest camelCase or Python snake_case)."""
    return VectorSpec.model_validate({"name": name, **fields})


def dense(name: str, size: int = 4, distance: str = "Cosine", **fields: Any) -> VectorSpec:
    return vector(name, type="dense", size=size, distance=distance, **fields)


def multidense(name: str, size: int = 4, distance: str = "Cosine", **fields: Any) -> VectorSpec:
    return vector(name, type="multidense", size=size, distance=distance, **fields)


def sparse(name: str, **fields: Any) -> VectorSpec:
    return vector(name, type="sparse", **fields)


def vdef(spec: VectorSpec) -> VectorDef:
    return vector_def_from_spec(spec)


# The seed's vectors.
TEXT_VECTOR = "multilingual_e5_large_instruct_v1"
IMAGE_VECTOR = "fashionsiglip_v1_embedding"
TEXT = dense(TEXT_VECTOR, 1024, "Cosine")
IMAGE = dense(IMAGE_VECTOR, 768, "Cosine")

# Capabilities of the Qdrants the planner meets.
SERVER = Capabilities(server_version="1.20.0")  # a real server: everything in place
# qdrant-client local mode (see qdrant/local.py): ignores tuning; records its settings
LOCAL = Capabilities(server_version="1.20.0", tunes_vectors=False)
OLD_SERVER = Capabilities(server_version="1.17.1", in_place_vectors=False)


# --- plugins and specs ----------------------------------------------------------------


def plugin(*vectors: VectorSpec) -> PluginSpec:
    return PluginSpec(vectors=list(vectors))


def wire(spec: VectorSpec) -> dict[str, Any]:
    """A VectorSpec in manifest form, for inline plugins in `ns_spec` dicts."""
    return spec.to_wire()


def ns_spec(doc: Mapping[str, Any] | None = None, /, **fields: Any) -> NamespaceSpec:
    """A NamespaceSpec from its manifest form; keyword arguments are merged in.

    Plugin entries may be plain names: `ns_spec(plugins=["text", "image"])`.
    """
    merged: dict[str, Any] = {**(doc or {}), **fields}
    if "plugins" in merged:
        merged["plugins"] = [{"name": p} if isinstance(p, str) else p for p in merged["plugins"]]
    return NamespaceSpec.model_validate(merged)


def inline(name: str, *vectors: VectorSpec) -> dict[str, Any]:
    """An inline plugin entry of `spec.plugins`."""
    return {"name": name, "vectors": [wire(v) for v in vectors]}


def desired_of(*vectors: VectorSpec, **spec_fields: Any) -> DesiredSchema:
    """The desired schema of one inline plugin `p` holding `vectors` (plus spec settings);
    no vectors means no plugins."""
    plugins = [inline("p", *vectors)] if vectors else []
    return resolve_desired(ns_spec(plugins=plugins, **spec_fields), {})


def observed_of(
    *vectors: VectorSpec | VectorDef,
    points: int = 0,
    name: str = "col",
    metadata: Mapping[str, Any] | None = None,
    shard_number: int | None = None,
    settings: CollectionSettings | None = None,
) -> ObservedCollection:
    """A live collection holding `vectors`, as the gateway would report it."""
    defs = tuple(v if isinstance(v, VectorDef) else vdef(v) for v in vectors)
    return ObservedCollection(
        name=name,
        vectors=defs,
        points_count=points,
        metadata=dict(metadata or {}),
        settings=settings or CollectionSettings(shard_number=shard_number),
    )


# --- whole resources ------------------------------------------------------------------


def namespace(
    spec: NamespaceSpec | Mapping[str, Any] | None = None,
    *,
    name: str = "tenant",
    kube_namespace: str = "team-a",
    uid: str = "uid-1",
    generation: int = 1,
    annotations: Mapping[str, str] | None = None,
    status: NamespaceStatus | None = None,
) -> NamespaceResource:
    """A Namespace resource as the handlers hand it to `reconcile()`."""
    if not isinstance(spec, NamespaceSpec):
        spec = ns_spec(spec)
    return NamespaceResource.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": kube_namespace,
                "uid": uid,
                "generation": generation,
                "annotations": dict(annotations or {}),
            },
            "spec": spec,
            "status": status,
        }
    )


def names(vectors: Sequence[VectorSpec | VectorDef]) -> list[str]:
    return [v.name for v in vectors]


# --- a real local-mode Qdrant ---------------------------------------------------------


@pytest.fixture
def qdrant(tmp_path: Path) -> Iterator[ClientGateway]:
    """The shared gateway of a fresh on-disk local-mode store, closed afterwards."""
    path = str(tmp_path / "q")
    gateway = connect(path=path)
    try:
        yield gateway
    finally:
        forget(path=path)
