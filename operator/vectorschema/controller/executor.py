"""The executor: performs a plan's actions through the Qdrant gateway, in order.

Kept apart from planning so the planner stays pure, and apart from reconcile so the order
of Qdrant calls for each kind of action is written once, matched by the action's class.
Every call is idempotent enough to be repeated after a crash: re-running a plan
re-observes first, so a step that already happened is simply not planned again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_never

from vectorschema.controller import failpoints
from vectorschema.core.actions import (
    Action,
    AddVector,
    CreateCollection,
    Plan,
    RecreateCollection,
    RemoveVector,
    ReplaceVector,
    UpdateVector,
)
from vectorschema.core.ownership import live_metadata
from vectorschema.qdrant.protocol import QdrantGateway


def execute(plan: Plan, gateway: QdrantGateway, owner_metadata: Mapping[str, Any]) -> None:
    """Perform every action of `plan`; raises the gateway's errors unchanged."""
    for action in plan.actions:
        perform(plan.collection, action, gateway, owner_metadata)


def perform(
    collection: str, action: Action, gateway: QdrantGateway, owner_metadata: Mapping[str, Any]
) -> None:
    """Perform one action (one step of a plan); raises the gateway's errors unchanged."""
    match action:
        case CreateCollection(vectors=vectors, settings=settings):
            gateway.create_collection(
                collection, vectors, settings, {**owner_metadata, **live_metadata(vectors)}
            )
            failpoints.after("create_collection")
        case RecreateCollection(vectors=vectors, settings=settings):
            gateway.delete_collection(collection)
            failpoints.after("delete_collection")
            gateway.create_collection(
                collection, vectors, settings, {**owner_metadata, **live_metadata(vectors)}
            )
            failpoints.after("create_collection")
        case AddVector(vector=vector):
            gateway.create_vector(collection, vector)
            failpoints.after("create_vector")
        case RemoveVector(old=old):
            gateway.delete_vector(collection, old.name)
            failpoints.after("delete_vector")
        case ReplaceVector(vector=vector):
            gateway.delete_vector(collection, vector.name)
            failpoints.after("delete_vector")
            gateway.create_vector(collection, vector)
            failpoints.after("create_vector")
        case UpdateVector(vector=vector):
            gateway.update_vector(collection, vector)
        case _:
            assert_never(action)
