"""A plan computed without acting on it: what `vectorschema plan` prints and what the
admission webhook tells `kubectl apply`.

Both callers go through `preview()`, so for the same Namespace, Plugins and live
collection they compute the same plan and the same fingerprint (a unit test holds them
to it). It only reads: the gateway's `capabilities`, `observe` and `count_with_vector`,
never a write. kopf-free; the callers resolve the desired schema and the connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vectorschema.api import NamespaceResource
from vectorschema.core.actions import AtRisk, Plan
from vectorschema.core.ownership import Refusal, drift_baseline, ownership_refusal
from vectorschema.core.planning import make_plan
from vectorschema.core.report import points_at_risk
from vectorschema.core.schema import Capabilities, DesiredSchema, ObservedCollection
from vectorschema.qdrant.errors import QdrantTimeout
from vectorschema.qdrant.protocol import QdrantGateway


@dataclass(frozen=True)
class Preview:
    """The plan for one Namespace against the live collection (or why there is none)."""

    collection: str
    observed: ObservedCollection | None
    #: None when the operator would refuse to touch the collection (`refusal` says why).
    plan: Plan | None
    refusal: Refusal | None = None
    #: Points whose data the plan deletes (what `status.plan.pointsAtRisk` would say; an
    #: estimate when the exact count took too long).
    at_risk: AtRisk = field(default_factory=AtRisk)
    #: Points carrying each vector the plan deletes, by vector name.
    carrying: Mapping[str, int] = field(default_factory=dict)
    #: False when planned without a Qdrant (the CLI without --qdrant-url/--qdrant-path).
    live: bool = True


def preview(
    resource: NamespaceResource,
    desired: DesiredSchema,
    gateway: QdrantGateway | None,
) -> Preview:
    """Plan `resource` against its live collection through `gateway` (reads only).

    Without a gateway the collection is planned as new. The operator's record of the
    vectors it last left live (on the collection, `drift_baseline`) lets the plan tell a
    change made by hand (drift), as the reconcile does; it does not enter the fingerprint.
    """
    collection = resource.collection_name
    if gateway is None:
        capabilities, observed = Capabilities(), None
    else:
        capabilities = gateway.capabilities()
        observed = gateway.observe(collection)
    refusal = ownership_refusal(resource, observed)
    if refusal is not None:
        return Preview(collection, observed, None, refusal, live=gateway is not None)
    baseline = drift_baseline(resource, observed)
    plan = make_plan(
        collection,
        desired,
        observed,
        strategy=resource.spec.strategy,
        capabilities=capabilities,
        last_applied=baseline.names,
        baseline_unknown=not baseline.known,
    )
    carrying: dict[str, int] = {}

    def count(name: str, vector: str, exact: bool) -> int:
        assert gateway is not None  # points_at_risk counts only with an observed collection
        if vector not in carrying:
            carrying[vector] = gateway.count_with_vector(name, vector, exact)
        return carrying[vector]

    # an exact count that times out switches to Qdrant's estimate (counts made stay exact)
    at_risk = points_at_risk(plan, observed, count, (QdrantTimeout,))
    return Preview(collection, observed, plan, None, at_risk, carrying, gateway is not None)
