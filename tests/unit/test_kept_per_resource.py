"""What the operator keeps per Namespace resource, for 10,000 of them in one process
(issue 19): kopf keeps each resource's latest body for its daemon, and the body's
`metadata.managedFields` (the API server's field ownership records, about 60% of a parsed
Namespace) are read by nothing here, so the event handler drops them from the very object
kopf keeps."""

from __future__ import annotations

import asyncio
import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import kopf
import pytest

from vectorschema.controller.locks import ResourceLocks
from vectorschema.controller.results import Observations
from vectorschema.controller.shares import TenantShares
from vectorschema.core.caps import Ranks
from vectorschema.core.scope import Scope
from vectorschema.k8s import handlers, sharding
from vectorschema.k8s.metrics import Metrics
from vectorschema.k8s.wakeups import Wakeups

H: Any = handlers  # kopf's decorators type the handlers as kopf calls them

MANAGED = [
    {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {".": {}, "f:plugins": {}}},
        "manager": "kubectl",
        "operation": "Update",
    }
]


def memo() -> kopf.Memo:
    m = kopf.Memo()
    m.observations = Observations()
    m.scope = Scope()
    m.gate = sharding.Gate(sharding.config_from_env({}), None)
    m.wakeups = Wakeups()
    m.locks = ResourceLocks()
    m.shares = TenantShares(4)
    m.executor = ThreadPoolExecutor(1)
    m.metrics = Metrics()
    m.ranks = Ranks()
    return m


def raw_namespace(generation: int) -> dict[str, Any]:
    return {
        "apiVersion": "vectorschema.dev/v1alpha1",
        "kind": "Namespace",
        "metadata": {
            "name": "n",
            "namespace": "t",
            "uid": "u-1",
            "generation": generation,
            "resourceVersion": str(generation),
            "labels": {"team": "a"},
            "managedFields": copy.deepcopy(MANAGED),
        },
        "spec": {"plugins": [{"name": "p"}]},
    }


def test_the_body_kopf_keeps_loses_its_managed_fields_and_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("VECTORSCHEMA_MAX_NAMESPACES_PER_KUBE_NAMESPACE", raising=False)
    m = memo()
    raw = raw_namespace(1)
    live = kopf.Body(cast(Any, raw))  # kopf's live view: over the event's own object
    expected = copy.deepcopy(raw)
    del expected["metadata"]["managedFields"]
    for kind in ("ADDED", "MODIFIED"):
        asyncio.run(
            H.namespace_event(  # as kopf calls it
                event=cast(Any, {"type": kind, "object": raw}),
                namespace="t",
                name="n",
                body=live,
                memo=m,
                namespaces_by_kube_namespace={},
            )
        )
        assert raw == expected
        assert "managedFields" not in live.metadata
        assert dict(live.metadata.labels) == {"team": "a"}
        raw["metadata"]["managedFields"] = copy.deepcopy(MANAGED)  # the next event's
    m.executor.shutdown()


def test_an_event_without_an_object_or_metadata_is_left_alone() -> None:
    for event in ({"type": "ADDED"}, {"type": "ADDED", "object": {}}, {"object": None}):
        before = copy.deepcopy(event)
        handlers.drop_managed_fields(cast(Any, event))
        assert event == before
