"""The executor: performs a plan's actions through the Qdrant gateway, in order.

Kept apart from planning so the planner stays pure, and apart from reconcile so the order
of Qdrant calls for each action kind is written once. Every call is idempotent enough to
be repeated after a crash: re-running a plan re-observes first, so a step that already
happened is simply not planned again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vectorschema import failpoints
from vectorschema.gateway import QdrantGateway
from vectorschema.models import ActionKind
from vectorschema.planning import Action, Plan


def execute(plan: Plan, gateway: QdrantGateway, owner_metadata: Mapping[str, Any]) -> None:
    """Perform every action of `plan`; raises the gateway's errors unchanged."""
    for action in plan.actions:
        _perform(plan.collection, action, gateway, owner_metadata)


def _perform(
    collection: str, action: Action, gateway: QdrantGateway, owner_metadata: Mapping[str, Any]
) -> None:
    match action.kind:
        case ActionKind.CREATE_COLLECTION:
            gateway.create_collection(collection, action.vectors, action.settings, owner_metadata)
            failpoints.after("create_collection")
        case ActionKind.RECREATE_COLLECTION:
            gateway.delete_collection(collection)
            failpoints.after("delete_collection")
            gateway.create_collection(collection, action.vectors, action.settings, owner_metadata)
            failpoints.after("create_collection")
        case ActionKind.ADD_VECTOR:
            assert action.vector is not None
            gateway.create_vector(collection, action.vector)
            failpoints.after("create_vector")
        case ActionKind.REMOVE_VECTOR:
            gateway.delete_vector(collection, action.name)
            failpoints.after("delete_vector")
        case ActionKind.REPLACE_VECTOR:
            assert action.vector is not None
            gateway.delete_vector(collection, action.name)
            failpoints.after("delete_vector")
            gateway.create_vector(collection, action.vector)
            failpoints.after("create_vector")
        case ActionKind.UPDATE_VECTOR:
            assert action.vector is not None
            gateway.update_vector(collection, action.vector)
